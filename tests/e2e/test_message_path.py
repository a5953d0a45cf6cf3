"""The whole message path through real processes: send -> durable -> ack -> deliver -> history."""

from __future__ import annotations

import json
import queue
from collections.abc import Callable

import pytest

from chatmq.clients import ChatClient
from chatmq.core.protocol import TopicKind
from tests.stack import RawClient, Stack


def _setup(stack: Stack, unique: Callable[[str], str]) -> tuple[str, str, str]:
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    return alice, bob, conv


def _next_message(client: ChatClient, timeout: float = 5.0) -> dict:
    while True:
        event = client.next_event(timeout)
        if event.kind is TopicKind.MSG:
            return event.payload


def test_send_is_acked_delivered_and_readable(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice) as a, stack.client(bob) as b:
        b.join(conv)
        ack = a.send(conv, "hello bob", client_msg_id="m-1").result(10)
        assert (ack.status, ack.seq, ack.conv) == ("received", 1, conv)
        delivered = _next_message(b)
        assert delivered["body"] == "hello bob"
        assert (delivered["seq"], delivered["sender"], delivered["client_msg_id"]) == (1, alice, "m-1")
        assert delivered["ts"] == ack.ts

    token = stack.token(bob)
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=token)
    assert status == 200
    assert [m["body"] for m in page["messages"]] == ["hello bob"]
    assert page["has_more"] is False
    shown = stack.admin("history", conv).stdout
    assert "hello bob" in shown and alice in shown


def test_websocket_client_works_end_to_end(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice, transport="websockets") as a, stack.client(bob) as b:
        b.join(conv)
        assert a.send(conv, "over websocket").result(10).seq == 1
        assert _next_message(b)["body"] == "over websocket"


def test_burst_keeps_per_conversation_order(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice) as a, stack.client(bob) as b, stack.client(bob, device="tablet") as watcher:
        watcher.join(conv)
        futures = [a.send(conv, f"a{i}") for i in range(150)] + [b.send(conv, f"b{i}") for i in range(150)]
        acks = [f.result(30) for f in futures]
        assert sorted(ack.seq for ack in acks) == list(range(1, 301))
        seen = [_next_message(watcher, 10) for _ in range(300)]
    assert [m["seq"] for m in seen] == list(range(1, 301)), "delivered in seq order, no gap"
    # each sender's own messages keep their send order
    for prefix in ("a", "b"):
        bodies = [m["body"] for m in seen if m["body"].startswith(prefix)]
        assert bodies == [f"{prefix}{i}" for i in range(150)]


def test_resend_with_same_client_msg_id_is_not_duplicated(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice) as a, stack.client(bob) as b:
        b.join(conv)
        first = a.send(conv, "once", client_msg_id="dup").result(10)
        a.send(conv, "other", client_msg_id="x").result(10)
        again = a.send(conv, "once", client_msg_id="dup").result(10)
        assert (again.status, again.seq) == ("received", first.seq)
        bodies = [_next_message(b)["body"] for _ in range(2)]
        assert bodies == ["once", "other"]
        with pytest.raises(queue.Empty):
            _next_message(b, timeout=1.0)
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(alice))
    assert status == 200
    assert [m["seq"] for m in page["messages"]] == [1, 2]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "bad_payload"),
        (b'["a list"]', "bad_payload"),
        (b'{"client_msg_id": "c1"}', "bad_payload"),
        (b'{"client_msg_id": "c1", "body": 7}', "bad_payload"),
        (b'{"client_msg_id": "c1", "body": "x", "extra": 1}', "bad_payload"),
        (b'{"client_msg_id": "c1", "body": "' + b"x" * 5000 + b'"}', "too_large"),
        (b'{"client_msg_id": "c1", "body": "\xff\xfe"}', "bad_payload"),
    ],
    ids=["not-json", "not-object", "missing-body", "wrong-type", "extra-field", "too-large", "bad-utf8"],
)
def test_bad_payload_gets_rejected_ack_and_nothing_stored(
    stack: Stack, unique: Callable[[str], str], raw: bytes, code: str
) -> None:
    alice, _bob, conv = _setup(stack, unique)
    raw_client = RawClient(stack.mqtt_port, alice)
    try:
        assert raw_client.subscribe(f"user/{alice}/ack")
        raw_client.publish(f"chat/{conv}/send/{alice}", raw)
        ack = json.loads(raw_client.expect(f"user/{alice}/ack"))
        assert ack["status"] == "rejected"
        assert ack["error"]["code"] == code
        assert ack["error"]["message"]
        if code == "too_large" or raw.startswith(b'{"client_msg_id": "c1"'):
            assert ack["client_msg_id"] == "c1"
        # the connection and the bridge keep working
        raw_client.publish(f"chat/{conv}/send/{alice}", b'{"client_msg_id": "ok", "body": "still fine"}')
        assert json.loads(raw_client.expect(f"user/{alice}/ack"))["seq"] == 1
    finally:
        raw_client.close()
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(alice))
    assert status == 200
    assert [m["body"] for m in page["messages"]] == ["still fine"]


def test_typing_is_delivered_but_never_stored(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice) as a, stack.client(bob) as b:
        b.join(conv)
        a.typing(conv, True)
        event = b.next_event(5)
        while event.kind is not TopicKind.TYPING:
            event = b.next_event(5)
        assert event.topic == f"chat/{conv}/typing/{alice}" and event.payload == {"typing": True}
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(bob))
    assert status == 200 and page["messages"] == []
