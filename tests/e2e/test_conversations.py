"""Conversation management through the real stack: API changes announced on user/{user}/events,
a removed member losing live delivery and history, and the live switch to fan-out on read and back
(this module's stack has a fan-out threshold of 3 members)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from chatmq.cli.localredis import LocalRedis
from tests.e2e.helpers import next_json, nothing_on, poll, raw, send
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)

THRESHOLD = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Stack]:
    env = {"CHATMQ_FANOUT_READ_THRESHOLD": str(THRESHOLD)}
    running = Stack(tmp_path_factory.mktemp("convstack") / "data", redis_server.url, env=env).start()
    yield running
    assert running.stop() == 0, running.log()


def _users(stack: Stack, unique: Callable[[str], str], *names: str) -> list[str]:
    users = [unique(name) for name in names]
    for user in users:
        stack.add_user(user)
    return users


def test_api_changes_reach_members_as_events(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, carol = _users(stack, unique, "ealice", "ebob", "ecarol")
    conv = unique("econv")
    bob_events = raw(stack, bob, f"user/{bob}/events")
    carol_events = raw(stack, carol, f"user/{carol}/events")
    try:
        status, made = stack.http(
            "POST", "/v1/conversations", token=stack.token(alice), body={"members": [bob], "id": conv, "title": "T"}
        )
        assert status == 201 and made["owner"] == alice, made
        added = next_json(bob_events, f"user/{bob}/events")
        assert (added["event"], added["conv"], added["title"]) == ("conversation_added", conv, "T")

        token = stack.token(alice)
        status, _ = stack.http("POST", f"/v1/conversations/{conv}/members", token=token, body={"user": carol})
        assert status == 200
        assert next_json(carol_events, f"user/{carol}/events")["event"] == "conversation_added"
        updated = next_json(bob_events, f"user/{bob}/events")
        assert (updated["event"], updated["change"], updated["user"]) == ("conversation_updated", "member_added", carol)

        status, _ = stack.http("PATCH", f"/v1/conversations/{conv}", token=token, body={"title": "New"})
        assert status == 200
        renamed = next_json(carol_events, f"user/{carol}/events")
        assert (renamed["change"], renamed["title"]) == ("title_changed", "New")

        status, _ = stack.http("DELETE", f"/v1/conversations/{conv}/members/{carol}", token=stack.token(carol))
        assert status == 204
        assert next_json(carol_events, f"user/{carol}/events")["event"] == "conversation_removed"
        # and the refusals, through the real server
        status, body = stack.http("DELETE", f"/v1/conversations/{conv}/members/{alice}", token=stack.token(bob))
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = stack.http("POST", "/v1/conversations", token=token, body={"members": [bob], "id": conv})
        assert (status, body["error"]["code"]) == (409, "conflict")
    finally:
        bob_events.close()
        carol_events.close()


def test_removed_member_loses_live_delivery_and_history(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, carol = _users(stack, unique, "xalice", "xbob", "xcarol")
    conv = unique("xconv")
    token = stack.token(alice)
    status, _ = stack.http("POST", "/v1/conversations", token=token, body={"members": [bob, carol], "id": conv})
    assert status == 201
    sender = raw(stack, alice, f"user/{alice}/ack")
    bob_live = raw(stack, bob, f"chat/{conv}/msg", f"chat/{conv}/receipts")
    carol_live = raw(stack, carol, f"chat/{conv}/msg")
    topic = f"chat/{conv}/msg"
    try:
        send(sender, alice, conv, "before", "b")
        assert next_json(bob_live, topic)["body"] == "before", "bob's subscription is live"
        assert next_json(carol_live, topic)["body"] == "before"

        status, _ = stack.http("DELETE", f"/v1/conversations/{conv}/members/{bob}", token=token)
        assert status == 204
        status, body = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(bob))
        assert (status, body["error"]["code"]) == (403, "forbidden"), "history is gone at once"

        probes = iter(range(10_000))
        # Live delivery ends when the broker's membership view refreshes (0.5 s by default): send
        # until carol sees a message bob no longer gets, then nothing more may reach bob.
        def cut() -> bool:
            ack = send(sender, alice, conv, "probe", f"probe{next(probes)}")
            assert next_json(carol_live, topic)["seq"] == ack["seq"]
            return nothing_on(bob_live, topic, 0.3)

        poll(cut, timeout=10, interval=0.1)
        for i in range(3):
            send(sender, alice, conv, f"after{i}", f"a{i}")
            assert next_json(carol_live, topic)["body"] == f"after{i}"
        assert nothing_on(bob_live, topic, 1.0), "bob still receives on his old subscription"
        assert not bob_live.subscribe(topic), "and cannot subscribe again"
    finally:
        for client in (sender, bob_live, carol_live):
            client.close()


def test_live_switch_to_fanout_on_read_and_back(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, carol, dave = _users(stack, unique, "falice", "fbob", "fcarol", "fdave")
    conv = unique("fconv")
    token = stack.token(alice)
    status, made = stack.http("POST", "/v1/conversations", token=token, body={"members": [bob, carol], "id": conv})
    assert status == 201 and made["fanout"] == "write"
    sender = raw(stack, alice, f"user/{alice}/ack")
    bob_live = raw(stack, bob, f"chat/{conv}/msg")
    topic = f"chat/{conv}/msg"
    counter = iter(range(1000))

    def next_delivery() -> dict:
        n = next(counter)
        ack = send(sender, alice, conv, f"body{n}", f"f{n}")
        got = next_json(bob_live, topic)
        assert got["seq"] == ack["seq"]
        return got

    try:
        full = next_delivery()
        assert full["body"] == "body0" and "notice" not in full

        status, grown = stack.http("POST", f"/v1/conversations/{conv}/members", token=token, body={"user": dave})
        assert status == 200 and grown["fanout"] == "read" and grown["member_count"] == THRESHOLD + 1
        notice = poll(lambda: (got := next_delivery()).get("notice") and got)
        assert set(notice) == {"conv", "seq", "sender", "ts", "notice"}
        assert (notice["conv"], notice["sender"]) == (conv, alice)
        status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?after={notice['seq'] - 1}", token=token)
        assert status == 200 and page["messages"][0]["seq"] == notice["seq"], "the body is in history, once"
        assert len({m["seq"] for m in page["messages"]}) == len(page["messages"])

        status, _ = stack.http("DELETE", f"/v1/conversations/{conv}/members/{dave}", token=token)
        assert status == 204
        status, shrunk = stack.http("GET", f"/v1/conversations/{conv}", token=token)
        assert shrunk["fanout"] == "write"
        back = poll(lambda: "body" in (got := next_delivery()) and got)
        assert "notice" not in back and back["sender"] == alice
    finally:
        sender.close()
        bob_live.close()


def test_receipts_topic_is_members_only(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, mallory = _users(stack, unique, "palice", "pmallory")
    conv = unique("pconv")
    status, _ = stack.http("POST", "/v1/conversations", token=stack.token(alice), body={"members": [], "id": conv})
    assert status == 201
    outsider = raw(stack, mallory)
    try:
        assert not outsider.subscribe(f"chat/{conv}/receipts")
        assert not outsider.subscribe(f"user/{alice}/events")
        outsider.publish(f"chat/{conv}/receipt/{mallory}", json.dumps({"seq": 1, "status": "read"}).encode())
    finally:
        outsider.close()
    status, body = stack.http("GET", f"/v1/conversations/{conv}/receipts", token=stack.token(alice))
    assert status == 200 and body["receipts"] == [{"user": alice, "delivered_seq": 0, "read_seq": 0, "updated_at": 0}]
