"""The client library's replies, edits, deletes and reactions, its receipts both ways, and catch-up
over MQTT for a device without HTTP, against the real stack (`chatmq up`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from chatmq.clients import ChatClient, Marker, Timeline
from tests.clients.test_library import _messages as _entries
from tests.clients.test_library import _setup as _pair
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(120)


def _client(stack: Stack, user: str, **kwargs: Any) -> ChatClient:
    """The library's test client; ``api_url=None`` for a device without HTTP."""
    api_url = kwargs.pop("api_url", stack.base_url)
    return ChatClient("127.0.0.1", stack.mqtt_port, user, PASSWORD, device=kwargs.pop("device", "phone"),
                      reconnect_delay=(0.1, 0.5), api_url=api_url, **kwargs)


def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_changes_through_the_library_rebuild_the_servers_view(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _pair(stack, unique)
    with _client(stack, alice) as a, _client(stack, bob) as b:
        a.join(conv, after=0)
        b.join(conv, after=0)
        first = a.send(conv, "helo").result(10)
        assert first.ok and first.seq == 1
        assert a.edit(conv, 1, "hello").result(10).seq == 2
        reply = b.send(conv, "hi", reply_to=1).result(10)
        assert reply.ok and reply.seq == 3
        assert b.react(conv, 1, "👋").result(10).ok
        assert b.react(conv, 3, "🎉").result(10).ok
        assert b.unreact(conv, 3, "🎉").result(10).ok
        refused = b.edit(conv, 1, "not mine").result(10)
        assert not refused.ok and (refused.error or {}).get("code") == "not_sender"
        assert a.delete(conv, 3).result(10).error["code"] == "not_sender"  # type: ignore[index]
        assert b.delete(conv, 3).result(10).seq == 7

        entries = _entries(b, 7)
        assert [e["seq"] for e in entries] == list(range(1, 8))
        assert [e.get("kind", "message") for e in entries] == [
            "message", "edit", "message", "react", "react", "unreact", "delete"]
        timeline = Timeline()
        for entry in entries:
            timeline.apply(entry)
        page = b.api.page(conv, view="messages")  # type: ignore[union-attr]
        for message in page["messages"]:
            message.pop("id")
            mine = timeline.get(message["seq"])
            assert mine is not None
            mine.pop("id")
            if mine["deleted"]:  # a tombstone seen live knows the deletion, not yet its entry seq
                assert mine["deleted"]["by"] == message["deleted"]["by"]
                mine["deleted"] = message["deleted"]
            assert mine == message


def test_delivered_goes_out_by_itself_and_read_on_request(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _pair(stack, unique)
    with _client(stack, alice) as a, _client(stack, bob, receipt_delay=0.1) as b:
        a.join(conv, after=0)
        b.join(conv, after=0)
        announced: list[dict[str, Any]] = []
        a.on_receipt(lambda event: announced.append(event.payload))
        seq = a.send(conv, "did you get this?").result(10).seq
        assert seq == 1
        _until(lambda: a.markers(conv).get(bob, Marker(bob)).delivered_seq == 1, "bob's delivered receipt")
        assert a.markers(conv)[bob].read_seq == 0
        assert b.mark_read(conv) is True  # up to the last entry delivered to bob's app
        assert b.mark_read(conv) is False  # nothing new to say
        _until(lambda: a.markers(conv)[bob].read_seq == 1, "bob's read receipt")
        assert {(r["user"], r["status"], r["seq"]) for r in announced} >= {(bob, "delivered", 1), (bob, "read", 1)}
    # a device that joins later gets the markers from the API
    with _client(stack, alice, device="tablet") as later:
        later.join(conv)
        assert later.markers(conv)[bob] == Marker(bob, 1, 1)
    status, body = stack.http("GET", f"/v1/conversations/{conv}", token=stack.token(bob))
    assert status == 200 and body["unread"] == 0 and body["read_seq"] == 1


def test_a_device_without_http_catches_up_over_mqtt(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _pair(stack, unique)
    with _client(stack, alice) as a:
        for i in range(1, 6):
            a.send(conv, f"m{i}").result(10)
        a.react(conv, 2, "🔥").result(10)
    with _client(stack, bob, api_url=None, history_over_mqtt=True, device="sensor") as b:
        assert b.api is None
        b.join(conv, after=0)  # everything from the start, fetched over the MQTT connection
        entries = _entries(b, 6)
        assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6] and entries[-1]["kind"] == "react"
        page = b.history.page(conv, view="messages", limit=2)  # type: ignore[union-attr]
        assert [m["seq"] for m in page["messages"]] == [4, 5] and page["has_more"] and page["last_seq"] == 6
    with _client(stack, bob, api_url=None, history_over_mqtt=True, device="sensor2") as fresh:
        fresh.join(conv)  # no cursor: starts after the conversation's last seq, learnt over MQTT
        with _client(stack, alice) as a:
            a.send(conv, "live").result(10)
        (entry,) = _entries(fresh, 1)
        assert entry["seq"] == 7 and entry["body"] == "live"
