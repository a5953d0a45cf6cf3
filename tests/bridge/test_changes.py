"""Replies, edits, deletes and reactions through a real Mosquitto and bridge: each is an entry of
the log with its own seq, acked like a send, fanned out in seq order, refused with a precise code,
and a deletion erases the attachments' media."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.media import MediaStore, open_media_store
from chatmq.core.store import NewMessage, Store
from chatmq.core.store.base import now_ms
from tests.bridge.devices import Device
from tests.media import samples

pytestmark = pytest.mark.timeout(60)


class Sender:
    """One user's device: publishes entries and waits for each one's ack."""

    def __init__(self, device: Callable[..., Device], user: str, conv: str = "c1") -> None:
        self.user, self.conv = user, conv
        self.dev = device(user, [f"user/{user}/ack"])
        self._n = 0

    def send(self, payload: dict[str, Any] | bytes, conv: str | None = None) -> dict[str, Any]:
        topic = f"user/{self.user}/ack"
        before = len(self.dev.on(topic))
        if isinstance(payload, dict) and "client_msg_id" not in payload:
            self._n += 1
            payload = {"client_msg_id": f"{self.user}-{self._n}", **payload}
        self.dev.publish(f"chat/{conv or self.conv}/send/{self.user}", payload)
        return self.dev.wait_count(topic, before + 1)[-1]

    def ok(self, payload: dict[str, Any], conv: str | None = None) -> int:
        ack = self.send(payload, conv)
        assert ack["status"] == "received", ack
        return int(ack["seq"])

    def refused(self, payload: dict[str, Any] | bytes, conv: str | None = None) -> str:
        ack = self.send(payload, conv)
        assert ack["status"] == "rejected", ack
        return str(ack["error"]["code"])


def test_changes_are_acked_stored_and_fanned_out_in_seq_order(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    watcher = device("carol", ["chat/c1/msg"])
    alice, bob = Sender(device, "alice"), Sender(device, "bob")
    assert alice.ok({"body": "helo"}) == 1
    assert alice.ok({"kind": "edit", "target": 1, "body": "hello"}) == 2
    assert bob.ok({"body": "hi!", "reply_to": 1, "conv": "c1"}) == 3
    assert bob.ok({"kind": "react", "target": 1, "emoji": "👋"}) == 4
    assert bob.ok({"kind": "unreact", "target": 1, "emoji": "👋"}) == 5
    assert bob.ok({"kind": "react", "target": 3, "emoji": "🎉"}) == 6
    assert alice.ok({"kind": "delete", "target": 1}) == 7

    live = watcher.wait_count("chat/c1/msg", 7)
    assert [m["seq"] for m in live] == list(range(1, 8))
    assert [m.get("kind", "message") for m in live] == ["message", "edit", "message", "react", "unreact", "react",
                                                       "delete"]
    assert live[1]["target"] == 1 and live[1]["body"] == "hello"
    assert live[2]["reply_to"] == 1
    assert live[3]["emoji"] == "👋" and live[3]["body"] == "👋"
    stored = {m.seq: m.to_payload() for m in store.history("c1").messages}
    for entry in live[2:]:  # as published (the deleted message 1 and its edit 2 are erased since)
        assert stored[entry["seq"]] == entry
    assert stored[1]["erased"] and stored[2]["erased"] and stored[1]["body"] == stored[2]["body"] == ""

    (first, reply) = store.message_view("c1").messages
    assert first.deleted is not None and first.deleted.by == "alice" and first.message.body == ""
    assert reply.message.reply_to == 1 and [(r.emoji, r.users) for r in reply.reactions] == [("🎉", ("bob",))]


def test_refusals_have_precise_codes_and_store_nothing(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    alice, bob = Sender(device, "alice"), Sender(device, "bob")
    alice.ok({"body": "one"})  # 1
    bob.ok({"kind": "react", "target": 1, "emoji": "👍"})  # 2
    alice.ok({"body": "two"})  # 3
    alice.ok({"kind": "delete", "target": 3})  # 4
    cases: list[tuple[Sender, dict[str, Any] | bytes, str]] = [
        (bob, {"kind": "edit", "target": 1, "body": "not mine"}, "not_sender"),
        (bob, {"kind": "delete", "target": 1}, "not_sender"),  # c1 has no owner: only the sender deletes
        (alice, {"kind": "edit", "target": 99, "body": "x"}, "unknown_target"),
        (alice, {"body": "re", "reply_to": 50}, "unknown_target"),
        (alice, {"kind": "react", "target": 2, "emoji": "👍"}, "bad_target"),
        (alice, {"kind": "edit", "target": 3, "body": "x"}, "target_deleted"),
        (bob, {"kind": "react", "target": 3, "emoji": "👍"}, "target_deleted"),
        (bob, {"kind": "react", "target": 1, "emoji": "👍"}, "already_reacted"),
        (bob, {"kind": "unreact", "target": 1, "emoji": "🙃"}, "not_reacted"),
        (alice, {"body": "x", "reply_to": 1, "conv": "c2"}, "wrong_conversation"),
        (alice, {"kind": "delete", "target": 1, "body": "no body on a delete"}, "bad_payload"),
        (alice, {"kind": "react", "target": 1, "emoji": "two words"}, "bad_payload"),
        (alice, {"kind": "react", "target": 1, "emoji": "x" * 33}, "bad_payload"),
        (alice, {"kind": "poll", "target": 1}, "bad_payload"),
        (alice, {"kind": "edit", "target": 1, "body": "x" * 5000}, "too_large"),
        (alice, {"kind": "edit", "target": 0, "body": "x"}, "bad_payload"),
    ]
    for sender, payload, code in cases:
        assert sender.refused(payload) == code, payload
    assert store.get_conversation("c1").last_seq == 4  # type: ignore[union-attr]
    # a refused id is not remembered: the same id goes through once the change is valid
    retry = {"client_msg_id": "retry", "kind": "edit", "target": 5, "body": "x"}
    assert bob.refused(retry) == "unknown_target"
    assert bob.ok({"body": "five"}) == 5
    assert bob.ok(retry) == 6


def test_a_resent_change_is_acked_with_its_first_seq(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    alice, bob = Sender(device, "alice"), Sender(device, "bob")
    alice.ok({"body": "x"})
    react = {"client_msg_id": "r-1", "kind": "react", "target": 1, "emoji": "👍"}
    assert bob.ok(react) == 2
    assert bob.ok({"kind": "unreact", "target": 1, "emoji": "👍"}) == 3
    assert bob.ok(react) == 2  # the resend: same ack, not stored or applied again
    assert store.get_conversation("c1").last_seq == 3  # type: ignore[union-attr]
    assert store.message_view("c1").messages[0].reactions == ()


def test_the_edit_window_setting(
    settings: Settings, start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    start_bridge(settings=settings.model_copy(update={"edit_window_s": 60}))
    store.append([NewMessage("c1", "alice", "old", "an hour ago", ts=now_ms() - 3600_000)])
    alice = Sender(device, "alice")
    assert alice.refused({"kind": "edit", "target": 1, "body": "too late"}) == "edit_window_closed"
    assert alice.ok({"body": "fresh"}) == 2
    assert alice.ok({"kind": "edit", "target": 2, "body": "in time"}) == 3
    assert alice.ok({"kind": "delete", "target": 1}) == 4  # the window is for edits only


def test_fan_out_on_read_sends_notices_with_the_kind(
    settings: Settings, start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    start_bridge(settings=settings.model_copy(update={"fanout_read_threshold": 2}))  # c1 has 3 members
    watcher = device("carol", ["chat/c1/msg"])
    alice = Sender(device, "alice")
    alice.ok({"body": "big room"})
    alice.ok({"kind": "edit", "target": 1, "body": "big room!"})
    alice.ok({"kind": "react", "target": 1, "emoji": "🎉"})
    notices = watcher.wait_count("chat/c1/msg", 3)
    assert [n.get("kind") for n in notices] == [None, "edit", "react"]
    assert all(n["notice"] is True and "body" not in n for n in notices)
    assert [n["seq"] for n in notices] == [1, 2, 3]


# --- media of deleted messages -----------------------------------------------------------------


@pytest.fixture
def media(settings: Settings) -> MediaStore:
    return open_media_store(settings)


def _upload(media: MediaStore, owner: str) -> dict[str, Any]:
    return media.put(owner, io.BytesIO(samples.PNG), "image/png", name="x.png").to_payload()


def test_a_delete_erases_the_media_unless_another_message_attaches_it(
    bridge: Bridge, store: Store, media: MediaStore, settings: Settings, device: Callable[..., Device]
) -> None:
    alice = Sender(device, "alice")
    only, shared = _upload(media, "alice"), _upload(media, "alice")
    alice.ok({"body": "pics", "attachments": [only, shared]})  # 1
    alice.ok({"body": "again", "attachments": [shared]})  # 2
    alice.ok({"body": "elsewhere", "attachments": [shared]}, conv="c2")  # c2's 1
    files = list(Path(settings.data_dir, "media").rglob("data"))
    assert len(files) == 2

    alice.ok({"kind": "delete", "target": 1})
    assert media.get(only["media_id"]) is None  # erased: bytes and metadata
    assert media.get(shared["media_id"]) is not None  # message 2 still attaches it
    assert media.get(shared["media_id"]).convs == {"c1", "c2"}  # type: ignore[union-attr]
    alice.ok({"kind": "delete", "target": 2})
    info = media.get(shared["media_id"])
    assert info is not None and info.convs == {"c2"}  # c1's members lose it; c2 still shows it
    alice.ok({"kind": "delete", "target": 1}, conv="c2")
    assert media.get(shared["media_id"]) is None
    assert list(Path(settings.data_dir, "media").rglob("data")) == []
