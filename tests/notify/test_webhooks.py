"""Webhooks against a real local HTTP receiver: signed, retried, ordered per conversation."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chatmq.core import webhooks
from chatmq.core.store import NewMessage, Store
from chatmq.core.store.base import DELIVERED, DELIVERY_DEAD, DELIVERY_WEBHOOK, Webhook, now_ms
from chatmq.notifier.service import Notifier
from tests.notify.receiver import Receiver, Reply
from tests.notify.test_push import idle

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec_test"


def test_events_are_signed_and_carry_the_documented_bodies(
    store: Store, hook_receiver: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    store.add_webhook(Webhook("crm", hook_receiver.url + "/hook", SECRET, webhooks.EVENT_TYPES))
    notifier = run_notifier()
    store.create_conversation("new", ["alice", "bob"], title="New")
    store.add_member("new", "carol")
    store.remove_member("new", "bob")
    store.set_title("new", "Renamed")
    store.append([NewMessage("new", "alice", "c1", "hello", 1_700_000_000_000)])
    seen = hook_receiver.wait_for(lambda rs: len(rs) == 5)
    idle(notifier, store)
    bodies = [r.json() for r in seen]
    assert [b["type"] for b in bodies] == ["conversation.created", "member.added", "member.removed",
                                           "conversation.updated", "message.created"]
    created, added, removed, renamed, message = bodies
    assert created["conv"] == "new"
    assert created["data"] == {"conv": "new", "title": "New", "members": ["alice", "carol"]}
    assert added["data"]["user"] == "carol" and removed["data"]["user"] == "bob"
    assert renamed["data"]["change"] == "title_changed" and renamed["data"]["title"] == "Renamed"
    assert message["id"] == "m:new:1" and message["ts"] == 1_700_000_000_000
    assert message["data"]["body"] == "hello" and message["data"]["seq"] == 1 and message["data"]["sender"] == "alice"
    for request in seen:
        assert request.path == "/hook" and request.header("Content-Type") == "application/json"
        assert request.header("User-Agent") == webhooks.USER_AGENT
        assert request.header(webhooks.EVENT_HEADER) == request.json()["type"]
        assert request.header(webhooks.DELIVERY_HEADER) == f"w:crm:{request.json()['id']}"
        timestamp = int(request.header(webhooks.TIMESTAMP_HEADER) or 0)
        assert abs(timestamp - time.time()) < 30
        assert webhooks.verify(SECRET, request.headers, request.body, int(time.time()))
        # the documented scheme, recomputed by hand: HMAC-SHA256 over "{timestamp}.{body}"
        import hashlib
        import hmac

        mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
        assert request.header(webhooks.SIGNATURE_HEADER) == f"v1={mac}"
        assert not webhooks.verify("wrong", request.headers, request.body, int(time.time()))
        assert not webhooks.verify(SECRET, request.headers, request.body + b" ", int(time.time()))
        assert not webhooks.verify(SECRET, request.headers, request.body, int(time.time()) + 301)  # too old


def test_subscriptions_get_only_their_events(
    store: Store, hook_receiver: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    store.add_webhook(Webhook("members", hook_receiver.url + "/m", SECRET, ("member.added",)))
    store.add_webhook(Webhook("msgs", hook_receiver.url + "/x", SECRET, ("message.created",)))
    notifier = run_notifier()
    store.add_member("pair", "carol")
    store.append([NewMessage("pair", "alice", "c1", "x", now_ms())])
    hook_receiver.wait_for(lambda rs: len(rs) == 2)
    idle(notifier, store)
    assert sorted((r.path, r.json()["type"]) for r in hook_receiver.received()) == [
        ("/m", "member.added"), ("/x", "message.created")]


def test_ordered_per_conversation_through_failures_and_retried_with_the_same_key(
    store: Store, hook_receiver: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    store.add_webhook(Webhook("crm", hook_receiver.url, SECRET, ("message.created",)))
    failures = {"m:team:3": 2}  # the third message fails twice

    def decide(request):  # type: ignore[no-untyped-def]
        left = failures.get(request.json()["id"], 0)
        if left:
            failures[request.json()["id"]] = left - 1
            return Reply(503, b"busy")
        return Reply(204, b"")

    hook_receiver.decide = decide
    notifier = run_notifier()
    for i in range(1, 7):
        store.append([NewMessage("team", "alice", f"t{i}", f"t{i}", now_ms()),
                      NewMessage("pair", "bob", f"p{i}", f"p{i}", now_ms())])
    hook_receiver.wait_for(lambda rs: len(rs) == 14)
    idle(notifier, store)
    team = [r.json()["data"]["seq"] for r in hook_receiver.received() if r.json()["conv"] == "team"]
    pair = [r.json()["data"]["seq"] for r in hook_receiver.received() if r.json()["conv"] == "pair"]
    assert team == [1, 2, 3, 3, 3, 4, 5, 6]  # 4..6 waited for 3
    assert pair == [1, 2, 3, 4, 5, 6]
    keys = [r.header(webhooks.DELIVERY_HEADER) for r in hook_receiver.received() if r.json()["id"] == "m:team:3"]
    assert keys == ["w:crm:m:team:3"] * 3
    assert all(d.state == DELIVERED for d in store.list_deliveries(channel=DELIVERY_WEBHOOK))


def test_dead_letters_let_the_conversation_move_on_and_replay_resends(
    store: Store, hook_receiver: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    store.add_webhook(Webhook("crm", hook_receiver.url, SECRET, ("message.created",)))
    hook_receiver.decide = lambda r: Reply(500) if r.json()["id"] == "m:pair:1" else Reply(200)
    notifier = run_notifier(delivery_max_attempts=2)
    store.append([NewMessage("pair", "alice", "a", "a", now_ms()), NewMessage("pair", "alice", "b", "b", now_ms())])
    hook_receiver.wait_for(lambda rs: len(rs) == 3)
    idle(notifier, store)
    (dead,) = store.list_deliveries(channel=DELIVERY_WEBHOOK, state=DELIVERY_DEAD)
    assert dead.id == "w:crm:m:pair:1" and dead.attempts == 2
    hook_receiver.decide = None
    store.replay_deliveries([dead.id], now_ms())
    hook_receiver.wait_for(lambda rs: len(rs) == 4)
    idle(notifier, store)
    assert hook_receiver.received()[-1].json()["id"] == "m:pair:1"
    assert store.get_delivery(dead.id).state == DELIVERED  # type: ignore[union-attr]


def test_a_removed_subscription_gets_nothing_more(
    store: Store, hook_receiver: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    store.add_webhook(Webhook("crm", hook_receiver.url, SECRET, ("message.created",)))
    hook_receiver.default = Reply(503)
    notifier = run_notifier(delivery_retry_base_s=0.5, delivery_retry_cap_s=0.5)
    store.append([NewMessage("pair", "alice", "a", "a", now_ms())])
    hook_receiver.wait_for(lambda rs: len(rs) == 1)
    store.remove_webhook("crm")
    time.sleep(1.5)
    idle(notifier, store)
    assert len(hook_receiver.received()) == 1
    assert [d.state for d in store.list_deliveries()] == ["cancelled"]


def test_edits_and_deletes_are_webhook_events_and_wake_no_phone(
    store: Store, hook_receiver: Receiver, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import PushTarget

    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-bob"))
    store.add_webhook(Webhook("crm", hook_receiver.url, SECRET, webhooks.EVENT_TYPES))
    notifier = run_notifier()
    store.append([NewMessage("pair", "alice", "m1", "helo", now_ms())])
    gateway.wait_for(lambda rs: len(rs) == 1)
    store.append([
        NewMessage("pair", "alice", "e1", "hello", now_ms(), kind=EntryKind.EDIT, target=1),
        NewMessage("pair", "bob", "r1", "👍", now_ms(), kind=EntryKind.REACT, target=1, emoji="👍"),
    ])  # fmt: skip
    hook_receiver.wait_for(lambda rs: len(rs) == 2)
    idle(notifier, store)
    store.append([NewMessage("pair", "alice", "d1", "", now_ms(), kind=EntryKind.DELETE, target=1)])
    hook_receiver.wait_for(lambda rs: len(rs) == 3)
    idle(notifier, store)
    bodies = [r.json() for r in hook_receiver.received()]
    assert [(b["type"], b["data"]["seq"]) for b in bodies] == [
        ("message.created", 1), ("message.edited", 2), ("message.deleted", 4)]
    assert bodies[1]["data"]["kind"] == "edit" and bodies[1]["data"]["target"] == 1
    assert bodies[1]["data"]["body"] == "hello"
    assert bodies[2]["data"]["kind"] == "delete" and bodies[2]["data"]["target"] == 1
    assert len(gateway.received()) == 1  # the message woke bob's phone; its edit, reaction, deletion did not


def test_a_deleted_message_leaves_no_text_in_the_delivery_log(
    store: Store, hook_receiver: Receiver, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import PushTarget

    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-bob"))
    store.add_webhook(Webhook("crm", hook_receiver.url, SECRET, webhooks.EVENT_TYPES))
    notifier = run_notifier()
    store.append([NewMessage("pair", "alice", "m1", "secret plan", now_ms())])
    store.append([NewMessage("pair", "alice", "e1", "secret plan v2", now_ms(), kind=EntryKind.EDIT, target=1)])
    hook_receiver.wait_for(lambda rs: len(rs) == 2)
    gateway.wait_for(lambda rs: len(rs) == 1)
    idle(notifier, store)
    assert "secret plan" in str([d.payload for d in store.list_deliveries()])
    store.append([NewMessage("pair", "alice", "d1", "", now_ms(), kind=EntryKind.DELETE, target=1)])
    hook_receiver.wait_for(lambda rs: len(rs) == 3)
    idle(notifier, store)
    logged = str([d.payload for d in store.list_deliveries()])
    assert "secret plan" not in logged
    assert logged.count("'erased': True") == 2 and "'preview': None" in logged
