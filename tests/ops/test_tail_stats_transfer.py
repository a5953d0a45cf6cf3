"""`chatmq tail`, `stats`, `export` and `import` against a real `chatmq up`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ops.helpers import Device
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)


def _conversation(stack: Stack, unique: Callable[[str], str]) -> tuple[str, str, Device]:
    user, conv = unique("tal"), unique("tconv")
    stack.add_user(user)
    stack.create_conv(conv, user)
    device = Device(stack, user)
    assert device.subscribe(f"user/{user}/ack")
    return user, conv, device


def _send(device: Device, conv: str, user: str, n: int, prefix: str = "m") -> None:
    for i in range(n):
        device.send(conv, user, f"{prefix}{i}", f"hello {i}")
        device.expect(f"user/{user}/ack")


def _follow(stack: Stack, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "chatmq.cli", "tail", *args], env=stack.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    banner = process.stderr.readline()  # printed once subscribed: nothing sent after it is missed
    assert banner.startswith("following"), banner + process.stderr.read()
    return process


def test_tail_follows_one_conversation_as_json(stack: Stack, unique: Callable[[str], str]) -> None:
    user, conv, device = _conversation(stack, unique)
    try:
        process = _follow(stack, conv, "--json", "--count", "2")
        _send(device, conv, user, 2)
        out, _ = process.communicate(timeout=20)
        assert process.returncode == 0
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(m["conv"], m["seq"], m["sender"]) for m in lines] == [(conv, 1, user), (conv, 2, user)]
        assert all(m["ts"] > 0 for m in lines)
    finally:
        device.close()


def test_tail_all_prints_one_line_per_message(stack: Stack, unique: Callable[[str], str]) -> None:
    user, conv, device = _conversation(stack, unique)
    try:
        process = _follow(stack, "--all", "--count", "1")
        _send(device, conv, user, 1)
        out, _ = process.communicate(timeout=20)
        assert process.returncode == 0
        line = out.strip()
        assert line.startswith(f"{conv} #1 ") and line.endswith(f" {user}: hello 0"), line
    finally:
        device.close()


def test_tail_unknown_conversation(stack: Stack, unique: Callable[[str], str]) -> None:
    result = stack.admin("tail", unique("nope"), check=False)
    assert result.returncode == 1 and "unknown conversation" in result.stderr
    assert stack.admin("tail", check=False).returncode == 2


def test_stats_shows_broker_and_bridge_figures(stack: Stack, unique: Callable[[str], str]) -> None:
    user, conv, device = _conversation(stack, unique)
    try:
        _send(device, conv, user, 3)
        out = stack.admin("stats").stdout
        figures = {line[:28].strip(): line[28:].strip() for line in out.splitlines() if line.strip()}
        assert int(figures["broker connections"]) >= 2
        assert figures["bridge connected"] == "yes"
        assert float(figures["bridge sends (total)"]) >= 3
        assert figures["bridge ack latency (avg)"].endswith(" ms")
        assert figures["store write latency (avg)"].endswith(" ms")
        assert figures["redis latency"].endswith(" ms")

        watched = stack.admin("stats", "--watch", "--interval", "0.2", "--count", "2").stdout
        assert watched.count("broker messages in/s") == 2
    finally:
        device.close()


def test_export_then_import_round_trip(stack: Stack, unique: Callable[[str], str], tmp_path: Path) -> None:
    user, conv, device = _conversation(stack, unique)
    try:
        _send(device, conv, user, 5)
    finally:
        device.close()
    dump = tmp_path / "conv.jsonl"
    result = stack.admin("export-conv", conv, "--format", "jsonl", "--output", str(dump))
    assert "exported 5 messages" in result.stderr
    exported = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [m["seq"] for m in exported] == [1, 2, 3, 4, 5]

    copy = unique("copy")
    stack.create_conv(copy, user)
    assert "imported 5 messages, renumbered (0 already present)" in \
        stack.admin("import-conv", str(dump), "--conv", copy).stdout
    assert "imported 0 messages, renumbered (5 already present)" in \
        stack.admin("import-conv", str(dump), "--conv", copy).stdout
    history = stack.admin("history", copy, "--json").stdout.splitlines()
    copied = [json.loads(line) for line in history]
    assert [(m["seq"], m["body"], m["client_msg_id"]) for m in copied] == [
        (m["seq"], m["body"], m["client_msg_id"]) for m in exported
    ]


def test_import_refuses_a_bad_file_without_writing(stack: Stack, unique: Callable[[str], str],
                                                   tmp_path: Path) -> None:
    user, conv = unique("imp"), unique("iconv")
    stack.add_user(user)
    stack.create_conv(conv, user)
    good = {"conv": conv, "sender": user, "client_msg_id": "a", "body": "x", "ts": int(time.time() * 1000)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n{not json\n")
    result = stack.admin("import-conv", str(bad), check=False)
    assert result.returncode == 1 and "bad.jsonl:2: not JSON" in result.stderr
    assert stack.admin("history", conv).stdout == ""
    senderless = {key: value for key, value in good.items() if key != "sender"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(senderless) + "\n" + json.dumps({**good, "ts": "soon"}) + "\n")
    result = stack.admin("import-conv", str(bad), check=False)
    assert result.returncode == 1 and "bad.jsonl:2: not a message (sender: field required)" in result.stderr
    assert "Error:" in result.stderr and "KeyError" not in result.stderr
    bad.write_text(json.dumps({**good, "ts": "soon"}) + "\n")
    result = stack.admin("import-conv", str(bad), check=False)
    assert "bad.jsonl:1: not a message (ts: input should be a valid integer)" in result.stderr
    assert stack.admin("history", conv).stdout == ""
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({**good, "conv": unique("nowhere")}) + "\n")
    result = stack.admin("import-conv", str(missing), check=False)
    assert result.returncode == 1 and "unknown conversation" in result.stderr
    assert stack.admin("export-conv", unique("nowhere"), check=False).returncode == 1


def test_export_then_import_keeps_replies_edits_deletes_and_reactions(
    stack: Stack, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """Into a conversation that already has messages (so every seq moves), the copy reads the same:
    each change and reply points at the seq its message got there."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store import NewMessage, open_store

    user, other = unique("xa"), unique("xb")
    stack.add_user(user)
    stack.add_user(other)
    conv, copy = unique("xconv"), unique("xcopy")
    stack.create_conv(conv, user, other)
    stack.create_conv(copy, user, other)
    store = open_store(f"sqlite:///{stack.data_dir / 'chatmq.db'}")
    try:
        store.append([NewMessage(copy, user, "already", "here first", 1)])
        results = store.append([
            NewMessage(conv, user, "m1", "helo", 1), NewMessage(conv, other, "m2", "secret", 2),
            NewMessage(conv, user, "e1", "hello", 3, kind=EntryKind.EDIT, target=1),
            NewMessage(conv, other, "r1", "👍", 4, kind=EntryKind.REACT, target=1, emoji="👍"),
            NewMessage(conv, other, "m3", "welcome", 5, reply_to=1),
            NewMessage(conv, other, "d1", "", 6, kind=EntryKind.DELETE, target=2),
        ])
        assert all(r.refusal is None for r in results)
        dump = tmp_path / "changes.jsonl"
        assert "exported 6 messages" in stack.admin("export-conv", conv, "--output", str(dump)).stderr
        assert "secret" not in dump.read_text()
        assert "imported 6 messages, renumbered (0 already present)" in \
        stack.admin("import-conv", str(dump), "--conv", copy).stdout
        assert "imported 0 messages, renumbered (6 already present)" in \
        stack.admin("import-conv", str(dump), "--conv", copy).stdout

        def current(c: str) -> list[tuple[Any, ...]]:
            return [(v.message.body, v.message.sender, v.edited is not None, v.deleted is not None,
                     [(r.emoji, r.users) for r in v.reactions], v.message.reply_to is not None)
                    for v in store.message_view(c).messages]

        assert current(copy)[1:] == current(conv)
        replies = [v for v in store.message_view(copy).messages if v.message.reply_to is not None]
        assert [r.message.reply_to for r in replies] == [2]  # "helo" is seq 2 in the copy
    finally:
        store.close()

    orphan = tmp_path / "orphan.jsonl"
    line = {"conv": copy, "sender": user, "client_msg_id": "x", "body": "y", "ts": 1, "kind": "edit", "target": 9}
    orphan.write_text(json.dumps(line) + "\n")
    result = stack.admin("import-conv", str(orphan), check=False)
    assert result.returncode == 1 and "orphan.jsonl:1: refers to seq 9, which is not in the file" in result.stderr
