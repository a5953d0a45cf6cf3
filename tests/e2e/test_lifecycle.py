"""Replies, edits, deletes and reactions on the real stack (`chatmq up`: amqtt broker, bridge,
gunicorn API): live in seq order, in both history views, media erased with its message, a v1
client unaffected, and history over MQTT with the HTTP API's access rules on the real broker."""

from __future__ import annotations

import json
import queue
from typing import Any

import pytest

from tests.clients.test_library import _messages as _entries
from tests.e2e.helpers import next_json, nothing_on, raw
from tests.e2e.test_media import http, upload
from tests.media import samples
from tests.stack import RawClient, Stack

pytestmark = pytest.mark.timeout(120)


def publish(client: RawClient, user: str, conv: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Publish one entry and wait for its ack (``client`` is subscribed to its ack topic)."""
    client.publish(f"chat/{conv}/send/{user}", json.dumps(payload).encode())
    ack = next_json(client, f"user/{user}/ack")
    assert ack["client_msg_id"] == payload["client_msg_id"], ack
    return ack


def seq(ack: dict[str, Any]) -> int:
    assert ack["status"] == "received", ack
    return int(ack["seq"])


def test_a_conversation_changes_live_and_in_history(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice, bob, _carol, conv = trio
    tokens = {user: stack.token(user) for user in (alice, bob)}
    status, photo = upload(stack, tokens[alice], samples.PNG, "p.png", "image/png")
    assert status == 201
    a = raw(stack, alice, f"user/{alice}/ack")
    b = raw(stack, bob, f"user/{bob}/ack")
    v1 = raw(stack, bob, f"chat/{conv}/msg")  # a v1 device: it renders whatever arrives here
    try:
        assert seq(publish(a, alice, conv, {"client_msg_id": "m1", "body": "see this", "attachments": [photo]})) == 1
        assert seq(publish(b, bob, conv, {"client_msg_id": "m2", "body": "nice!", "reply_to": 1})) == 2
        assert seq(publish(a, alice, conv, {"client_msg_id": "e1", "kind": "edit", "target": 1,
                                            "body": "see this photo"})) == 3
        assert seq(publish(b, bob, conv, {"client_msg_id": "r1", "kind": "react", "target": 1, "emoji": "😍"})) == 4
        refused = publish(b, bob, conv, {"client_msg_id": "d0", "kind": "delete", "target": 1})
        assert refused["status"] == "rejected" and refused["error"]["code"] == "not_sender"
        status, _, data = http(stack, "GET", photo["url"], tokens[bob])
        assert status == 200 and data == samples.PNG
        assert seq(publish(a, alice, conv, {"client_msg_id": "d1", "kind": "delete", "target": 1})) == 5

        live = [next_json(v1, f"chat/{conv}/msg") for _ in range(5)]
        assert [m["seq"] for m in live] == [1, 2, 3, 4, 5]  # gapless, in order: v1's rules hold
        assert all({"conv", "seq", "id", "sender", "client_msg_id", "body", "attachments", "ts"} <= set(m)
                   for m in live)
        assert [m.get("kind") for m in live] == [None, None, "edit", "react", "delete"]
    finally:
        for client in (a, b, v1):
            client.close()

    # the media went with its message: bytes gone for everyone, uploader included
    for user in (alice, bob):
        status, _, _ = http(stack, "GET", photo["url"], tokens[user])
        assert status == 404

    status, entries = stack.http("GET", f"/v1/conversations/{conv}/messages", token=tokens[bob])
    assert status == 200 and entries["last_seq"] == 5
    assert [m["seq"] for m in entries["messages"]] == [1, 2, 3, 4, 5]
    assert entries["messages"][0]["erased"] and entries["messages"][2]["erased"]
    assert "see this" not in json.dumps(entries)

    status, view = stack.http("GET", f"/v1/conversations/{conv}/messages?view=messages", token=tokens[bob])
    assert status == 200
    tomb, answer = view["messages"]
    assert tomb["deleted"]["by"] == alice and tomb["body"] == "" and tomb["attachments"] == []
    assert tomb["reactions"] == [] and answer["reply_to"] == 1 and answer["body"] == "nice!"

    status, listed = stack.http("GET", f"/v1/conversations/{conv}", token=tokens[alice])
    assert status == 200 and listed["unread"] == 1 and listed["last_message"]["body"] == "nice!"


def test_history_over_mqtt_on_the_real_broker(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    """The same access tests as the HTTP history (tests/api/test_history.py, tests/e2e/test_access.py),
    through the broker's access rules and the bridge."""
    alice, bob, carol, conv = trio
    with stack.client(alice) as a:
        for i in range(5):
            a.send(conv, f"m{i}").result(10)
    requests = f"user/{alice}/history/request"
    replies = f"user/{alice}/history/response"
    me = raw(stack, alice, replies)
    spy = raw(stack, bob)
    stranger = raw(stack, carol, f"user/{carol}/history/response")
    try:
        # only alice reads her replies; nobody publishes on her request topic; server topics are read-only
        for topic in (replies, f"user/{alice}/history/+", "user/+/history/response", requests):
            assert not spy.subscribe(topic), topic
        spy.publish(requests, json.dumps({"id": "spoof", "conv": conv}).encode())
        me.publish(replies, json.dumps({"id": "forged", "status": "ok"}).encode())
        assert nothing_on(me, replies, 1.5)  # both publishes were dropped by the broker

        me.publish(requests, json.dumps({"id": "p1", "conv": conv, "after": 2, "limit": 2}).encode())
        page = next_json(me, replies)
        assert page["id"] == "p1" and [m["seq"] for m in page["messages"]] == [3, 4] and page["has_more"]
        assert page["last_seq"] == 5

        stranger.publish(f"user/{carol}/history/request", json.dumps({"id": "c1", "conv": conv}).encode())
        assert next_json(stranger, f"user/{carol}/history/response")["error"]["code"] == "forbidden"
        me.publish(requests, json.dumps({"id": "p2", "conv": conv + "-nope"}).encode())
        assert next_json(me, replies)["error"]["code"] == "not_found"

        stack.admin("conv", "remove-member", conv, alice)
        me.publish(requests, json.dumps({"id": "p3", "conv": conv}).encode())
        assert next_json(me, replies)["error"]["code"] == "forbidden"  # at once, as over HTTP
    finally:
        for client in (me, spy, stranger):
            client.close()
    status, _ = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(alice))
    assert status == 403


def test_the_client_library_delivers_changes_in_order_after_a_gap(
    stack: Stack, trio: tuple[str, str, str, str]
) -> None:
    """The library's strict sequencer (as shipped in v1: it knows nothing of kinds) sees every
    entry once, in seq order, also when it catches up over a burst of changes it missed."""
    alice, bob, _carol, conv = trio
    changer = raw(stack, alice, f"user/{alice}/ack")
    try:
        with stack.client(bob, api_url=stack.base_url) as b:
            b.join(conv, after=0)
            seq(publish(changer, alice, conv, {"client_msg_id": "m1", "body": "one"}))
            assert _entries(b, 1)[0]["seq"] == 1
        for payload in ({"client_msg_id": "m2", "body": "two"},
                        {"client_msg_id": "e1", "kind": "edit", "target": 1, "body": "one!"},
                        {"client_msg_id": "r1", "kind": "react", "target": 2, "emoji": "🔥"}):
            seq(publish(changer, alice, conv, payload))
        with stack.client(bob, api_url=stack.base_url) as b:
            b.join(conv, after=1)
            got = _entries(b, 3)
            assert [m["seq"] for m in got] == [2, 3, 4]
            assert [m.get("kind") for m in got] == [None, "edit", "react"]
            with pytest.raises(queue.Empty):
                _entries(b, 1, timeout=1)  # each once, nothing more
    finally:
        changer.close()
