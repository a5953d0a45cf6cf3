"""Offline push end to end below the stack: messages appended to a real store (as the bridge
does), a notifier thread, and a real local HTTP server as the push gateway."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from chatmq.core import push
from chatmq.core.presence import Presence
from chatmq.core.store import NewMessage, ReceiptUpdate, Store
from chatmq.core.store.base import DELIVERED, DELIVERY_DEAD, DELIVERY_PUSH, PushTarget, now_ms
from chatmq.notifier.service import Notifier
from tests.notify.receiver import Receiver, Reply

pytestmark = pytest.mark.timeout(60)


def send(store: Store, conv: str, sender: str, *bodies: str, prefix: str = "m") -> None:
    store.append([NewMessage(conv, sender, f"{prefix}-{sender}-{i}", body, now_ms()) for i, body in enumerate(bodies)])


def notes(gateway: Receiver) -> list[dict]:
    return [r.json()["notification"] for r in gateway.received()]


def idle(notifier: Notifier, store: Store) -> None:
    """Wait until the outbox is consumed and nothing is due or in flight."""
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        waiting = store.pending_outbox(1) or store.due_deliveries(now_ms() + 10**9, 1)
        if not waiting and not notifier.sender.in_flight:
            return
        time.sleep(0.02)
    raise AssertionError("the notifier did not settle")


def register(store: Store, user: str, device: str = "phone", platform: str = "fcm", **kw: object) -> PushTarget:
    return store.put_push_target(PushTarget(user, device, platform, f"tok-{user}-{device}", **kw))  # type: ignore[arg-type]


def test_offline_members_get_one_notification_per_device_online_and_muted_ones_none(
    store: Store, gateway: Receiver, redis_client: redis.Redis, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "alice")  # the sender: never notified of her own message
    register(store, "bob", "phone")
    register(store, "bob", "tablet", "apns", preview=False)
    register(store, "carol")  # online: no push
    register(store, "dave")  # muted: no push
    Presence(redis_client, 60_000).device_online("carol", "laptop", "c1", now_ms())
    store.set_mute("team", "dave", 0)
    notifier = run_notifier()
    send(store, "team", "alice", "hello team")
    seen = gateway.wait_for(lambda rs: len(rs) >= 2)
    idle(notifier, store)
    assert len(gateway.received()) == 2
    by_device = {n["device"]["device"]: n for n in notes(gateway)}
    assert set(by_device) == {"phone", "tablet"}
    phone = by_device["phone"]
    assert phone["type"] == "message" and phone["user"] == "bob" and phone["conv"] == "team"
    assert phone["conv_title"] == "Team" and phone["sender"] == "alice" and phone["seq"] == 1
    assert phone["preview"] == "hello team" and phone["collapse_key"] == "team" and phone["collapsed"] == 1
    assert phone["counts"] == {"unread": 1, "conv_unread": 1}
    assert phone["device"] == {"device": "phone", "platform": "fcm", "token": "tok-bob-phone", "app_id": None}
    assert phone["id"] == "bob/phone:team:1:message"
    assert by_device["tablet"]["preview"] is None  # that device asked for no previews
    request = seen[0]
    assert request.path == "/notify" and request.header("Content-Type") == "application/json"
    assert request.header("Idempotency-Key") == request.json()["notification"]["id"]


def test_a_burst_collapses_per_conversation(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    notifier = run_notifier(push_collapse_s=1.0)
    send(store, "pair", "alice", "first")
    gateway.wait_for(lambda rs: len(rs) == 1)
    for i in range(49):
        send(store, "pair", "alice", f"more {i}", prefix=f"b{i}")
    gateway.wait_for(lambda rs: len(rs) >= 2, timeout=10)
    idle(notifier, store)
    received = notes(gateway)
    assert len(received) == 2, [n["seq"] for n in received]  # 50 messages, two buzzes
    assert received[1]["seq"] == 50 and received[1]["preview"] == "more 48"
    assert received[0]["collapsed"] + received[1]["collapsed"] == 50
    assert received[1]["counts"]["conv_unread"] == 50
    assert gateway.received()[1].at - gateway.received()[0].at >= 0.9  # not before the window ended


def test_a_read_on_another_device_clears_the_notification(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    notifier = run_notifier()
    send(store, "pair", "alice", "are you there?")
    gateway.wait_for(lambda rs: len(rs) == 1)
    idle(notifier, store)
    store.apply_receipts([ReceiptUpdate("pair", "bob", 1, "read", now_ms())])  # read on his laptop
    gateway.wait_for(lambda rs: len(rs) == 2)
    idle(notifier, store)
    clear = notes(gateway)[1]
    assert clear["type"] == "clear" and clear["conv"] == "pair" and clear["seq"] == 1
    assert clear["counts"] == {"unread": 0, "conv_unread": 0} and clear["id"] == "bob/phone:pair:1:clear"
    store.apply_receipts([ReceiptUpdate("pair", "bob", 1, "delivered", now_ms())])
    idle(notifier, store)
    assert len(gateway.received()) == 2  # nothing more to clear


def test_read_before_sending_cancels_and_online_at_send_time_cancels(
    store: Store, gateway: Receiver, redis_client: redis.Redis, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    gateway.script = [Reply(503)]  # the first attempt fails and waits for its retry
    notifier = run_notifier(delivery_retry_base_s=1.0, delivery_retry_cap_s=1.0)
    send(store, "pair", "alice", "one")
    gateway.wait_for(lambda rs: len(rs) == 1)
    Presence(redis_client, 60_000).device_online("bob", "laptop", "c1", now_ms())  # bob comes online
    idle(notifier, store)
    assert len(gateway.received()) == 1
    (delivery,) = store.list_deliveries(channel=DELIVERY_PUSH)
    assert delivery.state == "cancelled" and delivery.last_error == "online meanwhile"  # checked, not sent


def test_retries_then_dead_letter_then_replay_with_the_same_idempotency_key(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    gateway.default = Reply(500, b'{"error": "down"}')
    notifier = run_notifier(delivery_max_attempts=3)
    send(store, "pair", "alice", "hello")
    gateway.wait_for(lambda rs: len(rs) == 3)
    idle(notifier, store)
    (dead,) = store.list_deliveries(channel=DELIVERY_PUSH, state=DELIVERY_DEAD)
    assert dead.attempts == 3 and "500" in (dead.last_error or "")
    keys = {r.header("Idempotency-Key") for r in gateway.received()}
    assert keys == {"bob/phone:pair:1:message"}
    gateway.default = Reply(200)
    assert store.replay_deliveries([dead.id], now_ms()) == 1
    gateway.wait_for(lambda rs: len(rs) == 4)
    idle(notifier, store)
    assert gateway.received()[3].header("Idempotency-Key") == "bob/phone:pair:1:message"
    assert store.get_delivery(dead.id).state == DELIVERED  # type: ignore[union-attr]


def test_a_4xx_from_the_gateway_is_dead_at_once_and_rejected_tokens_are_forgotten(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob", "phone")
    register(store, "bob", "old")
    gateway.decide = lambda r: (Reply(200, b'{"rejected": ["tok-bob-old"]}')
                                if r.json()["notification"]["device"]["device"] == "old" else Reply(400, b"bad"))
    notifier = run_notifier()
    send(store, "pair", "alice", "hi")
    gateway.wait_for(lambda rs: len(rs) == 2)
    idle(notifier, store)
    assert [t.device for t in store.push_targets(["bob"])] == ["phone"]  # the provider said "old" is dead
    states = {d.target: d.state for d in store.list_deliveries(channel=DELIVERY_PUSH)}
    assert states == {"bob/phone": DELIVERY_DEAD, "bob/old": DELIVERED}


def test_push_off_without_a_gateway_url_still_consumes_the_outbox(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    notifier = run_notifier(push_gateway_url=None)
    send(store, "pair", "alice", "x")
    idle(notifier, store)
    assert gateway.received() == [] and store.list_deliveries() == [] and store.pending_outbox() == []


def test_the_notification_body_is_the_documented_shape() -> None:
    target = PushTarget("bob", "phone", "apns", "t0k", "com.example")
    draft = push.message_draft(target, "team", "Team", 7, "alice", "m1d", 123, "x" * 500, 3)
    body = push.notification(draft, 9, 4)["notification"]
    assert set(body) == {"id", "type", "user", "conv", "conv_title", "seq", "sender", "message_id", "ts", "preview",
                         "collapse_key", "collapsed", "device", "counts"}
    assert len(body["preview"]) == push.PREVIEW_CHARS
    assert push.rejected_tokens(b'{"rejected": ["a", 1, "b"]}') == ["a", "b"]
    assert push.rejected_tokens(b"not json") == [] and push.rejected_tokens(b"") == []


def test_a_device_logged_out_before_sending_gets_nothing(
    store: Store, gateway: Receiver, run_notifier: Callable[..., Notifier]
) -> None:
    register(store, "bob")
    gateway.script = [Reply(503)]
    notifier = run_notifier(delivery_retry_base_s=1.0, delivery_retry_cap_s=1.0)
    send(store, "pair", "alice", "one")
    gateway.wait_for(lambda rs: len(rs) == 1)
    store.delete_push_target("bob", "phone")  # POST /v1/auth/logout {"device": "phone"}
    idle(notifier, store)
    assert len(gateway.received()) == 1
    assert [d.state for d in store.list_deliveries(channel=DELIVERY_PUSH)] == ["cancelled"]
