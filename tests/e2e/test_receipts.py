"""Receipts and read state through the real stack: markers move forward only, refused receipts
store nothing, receipts reach the sender, unread counts follow reads."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.e2e.helpers import next_event, next_json, nothing_on, poll, raw, send
from tests.stack import Stack

pytestmark = pytest.mark.timeout(90)


def _setup(stack: Stack, unique: Callable[[str], str], messages: int = 3) -> tuple[str, str, str]:
    alice, bob, conv = unique("ralice"), unique("rbob"), unique("rconv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    sender = raw(stack, alice, f"user/{alice}/ack")
    try:
        for i in range(messages):
            send(sender, alice, conv, f"m{i}", f"c{i}")
    finally:
        sender.close()
    return alice, bob, conv


def _receipt(seq: object, status: object) -> bytes:
    return json.dumps({"seq": seq, "status": status}).encode()


def _markers(stack: Stack, user: str, conv: str) -> dict[str, tuple[int, int]]:
    status, body = stack.http("GET", f"/v1/conversations/{conv}/receipts", token=stack.token(user))
    assert status == 200, body
    return {m["user"]: (m["delivered_seq"], m["read_seq"]) for m in body["receipts"]}


def test_receipts_reach_the_sender_and_only_move_forward(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    watcher = raw(stack, alice, f"chat/{conv}/receipts")
    reader = raw(stack, bob)
    try:
        topic = f"chat/{conv}/receipts"
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(2, "delivered"))
        got = next_json(watcher, topic)
        assert (got["user"], got["seq"], got["status"]) == (bob, 2, "delivered") and got["ts"] > 0
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(1, "delivered"))  # lower: ignored
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(2, "delivered"))  # equal: ignored
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(1, "read"))
        got = next_json(watcher, topic)
        assert (got["seq"], got["status"]) == (1, "read"), "the ignored receipts were not announced"
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(3, "read"))
        assert (next_json(watcher, topic)["seq"]) == 3
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(2, "read"))
        assert nothing_on(watcher, topic, 1.0)
    finally:
        watcher.close()
        reader.close()
    assert _markers(stack, alice, conv) == {alice: (0, 0), bob: (3, 3)}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (_receipt(4, "read"), "seq_ahead"),
        (_receipt(0, "read"), "bad_payload"),
        (_receipt(2, "seen"), "bad_payload"),
        (_receipt("2", "read"), "bad_payload"),
        (b"not json", "bad_payload"),
        (b'{"seq": 1, "status": "read", "extra": true}', "bad_payload"),
    ],
    ids=["seq-ahead", "zero", "bad-status", "string-seq", "not-json", "extra-field"],
)
def test_bad_receipts_are_refused_and_store_nothing(
    stack: Stack, unique: Callable[[str], str], payload: bytes, code: str
) -> None:
    alice, bob, conv = _setup(stack, unique)
    reader = raw(stack, bob, f"user/{bob}/events")
    watcher = raw(stack, alice, f"chat/{conv}/receipts")
    try:
        reader.publish(f"chat/{conv}/receipt/{bob}", payload)
        refusal = next_event(reader, bob, "receipt_rejected")
        assert refusal["conv"] == conv
        assert refusal["error"]["code"] == code and refusal["error"]["message"]
        if code == "seq_ahead":
            assert (refusal["seq"], refusal["status"]) == (4, "read")
        assert nothing_on(watcher, f"chat/{conv}/receipts", 0.5)
        # the connection and the bridge keep working
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(1, "delivered"))
        assert next_json(watcher, f"chat/{conv}/receipts")["seq"] == 1
    finally:
        reader.close()
        watcher.close()
    assert _markers(stack, alice, conv)[bob] == (1, 0)


def test_unread_counts_follow_reads(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique, messages=4)

    def mine(user: str) -> dict:
        status, body = stack.http("GET", "/v1/conversations", token=stack.token(user))
        assert status == 200, body
        return {c["id"]: c for c in body["conversations"]}[conv]

    before = mine(bob)
    assert (before["last_seq"], before["read_seq"], before["unread"]) == (4, 0, 4)
    assert before["last_message"]["body"] == "m3" and before["last_message"]["sender"] == alice
    assert mine(alice)["unread"] == 0, "your own messages are never unread"
    reader = raw(stack, bob)
    try:
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(3, "read"))
        after = poll(lambda: (c := mine(bob))["read_seq"] == 3 and c)
        assert after["unread"] == 1 and after["delivered_seq"] == 3
        reader.publish(f"chat/{conv}/receipt/{bob}", _receipt(4, "read"))
        poll(lambda: mine(bob)["unread"] == 0)
    finally:
        reader.close()
