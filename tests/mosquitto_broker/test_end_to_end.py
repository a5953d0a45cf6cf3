"""The foundation's end-to-end path with Mosquitto (dynamic security) in place of the amqtt broker:
the real sync, the real bridge and API, SQLite and a private Redis."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import orjson
import pytest
import redis

from chatmq.api.app import create_app
from chatmq.bridge.service import Bridge
from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.store import Store
from tests.access_cases import PASSWORD
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(60)


def send(client: RawClient, conv: str, user: str, msg_id: str, body: str) -> None:
    client.publish(f"chat/{conv}/send/{user}", orjson.dumps({"client_msg_id": msg_id, "body": body}))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def nothing_on(client: RawClient, topic: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            got, _ = client.received.get(timeout=left)
        except queue.Empty:
            return True
        if got == topic:
            return False
    return True


def test_send_is_durable_acked_delivered_and_in_the_history_api(
    bridge: Bridge, connect: Callable[..., RawClient], store: Store, settings: Settings, redis_client: redis.Redis
) -> None:
    alice, bob = connect("alice"), connect("bob")
    assert not alice.refused and not bob.refused
    assert alice.subscribe("user/alice/ack") and bob.subscribe("chat/c1/msg")
    send(alice, "c1", "alice", "m1", "hello over mosquitto")
    ack = orjson.loads(alice.expect("user/alice/ack"))
    assert ack["status"] == "received" and ack["seq"] == 1 and ack["client_msg_id"] == "m1"
    # The ack means durable: the message is in the store before the ack was sent.
    assert [m.body for m in store.history("c1").messages] == ["hello over mosquitto"]
    delivered = orjson.loads(bob.expect("chat/c1/msg"))
    assert delivered["seq"] == 1 and delivered["sender"] == "alice" and delivered["body"] == "hello over mosquitto"

    api = create_app(settings, store=store, redis_client=redis_client).test_client()
    login = api.post("/v1/auth/token", json={"username": "bob", "password": PASSWORD})
    assert login.status_code == 200
    page = api.get("/v1/conversations/c1/messages", headers={"Authorization": f"Bearer {login.json['token']}"})
    assert page.status_code == 200
    assert [m["body"] for m in page.json["messages"]] == ["hello over mosquitto"]


def test_presence_by_last_will(bridge: Bridge, connect: Callable[..., RawClient]) -> None:
    bob = connect("bob")
    assert bob.subscribe("presence/carol")
    will = orjson.dumps({"status": "offline", "conn": "k1"})
    carol = connect("carol", client_id="carol-phone", will=("presence/carol/phone", will))
    carol.publish("presence/carol/phone", orjson.dumps({"status": "online", "conn": "k1"}))
    assert orjson.loads(bob.expect("presence/carol"))["status"] == "online"
    carol.client.loop_stop()
    carol.client.socket().close()  # vanish without DISCONNECT: Mosquitto publishes the will
    assert orjson.loads(bob.expect("presence/carol"))["status"] == "offline"


def test_acl_refusals(bridge: Bridge, connect: Callable[..., RawClient], store: Store, settings: Settings) -> None:
    assert connect("alice", "wrong password").refused
    token = issue_token(settings.load_secret(), SERVICE_USER, 60, service=True).token
    assert connect(SERVICE_USER, token, client_id="fake-bridge").refused  # Mosquitto takes no tokens

    alice, dave = connect("alice"), connect("dave")
    assert alice.subscribe("user/alice/ack") and dave.subscribe("user/dave/ack")
    send(alice, "c1", "bob", "spoof", "I am bob")  # spoofed sender: dropped by Mosquitto
    send(dave, "c1", "dave", "intrude", "not a member")  # non-member: dropped by Mosquitto
    assert not alice.subscribe("user/bob/ack")  # someone else's acks
    assert not dave.subscribe("chat/c1/msg") and not dave.subscribe("presence/alice")
    assert not alice.subscribe("#") and not alice.subscribe("chat/+/msg")

    send(alice, "c1", "alice", "real", "the first message that counts")
    ack = orjson.loads(alice.expect("user/alice/ack"))
    assert ack["client_msg_id"] == "real" and ack["seq"] == 1  # nothing refused got a seq
    assert [m.client_msg_id for m in store.history("c1").messages] == ["real"]
    assert nothing_on(dave, "user/dave/ack", 0.3)


def test_membership_changes_take_effect(
    bridge: Bridge, connect: Callable[..., RawClient], store: Store
) -> None:
    alice, bob, dave = connect("alice"), connect("bob"), connect("dave")
    assert bob.subscribe("chat/c1/msg") and not dave.subscribe("chat/c1/msg")

    store.add_member("c1", "dave")
    probe = connect("dave", client_id="dave-probe")
    wait_until(lambda: probe.subscribe("chat/c1/msg"), "dave's ACLs for c1")
    assert dave.subscribe("chat/c1/msg") and dave.subscribe("presence/alice")
    send(alice, "c1", "alice", "m1", "welcome dave")
    assert orjson.loads(dave.expect("chat/c1/msg"))["body"] == "welcome dave"
    assert orjson.loads(bob.expect("chat/c1/msg"))["body"] == "welcome dave"
    send(dave, "c1", "dave", "d1", "thanks")  # a member now: may send
    assert orjson.loads(dave.expect("chat/c1/msg"))["body"] == "thanks"
    assert orjson.loads(bob.expect("chat/c1/msg"))["body"] == "thanks"

    store.remove_member("c1", "bob")
    bob_probe = connect("bob", client_id="bob-probe")
    wait_until(lambda: not bob_probe.subscribe("chat/c1/msg"), "bob's c1 ACLs removed")
    send(alice, "c1", "alice", "m2", "bob is gone")
    assert orjson.loads(dave.expect("chat/c1/msg"))["body"] == "bob is gone"
    # bob's old subscription stays, but Mosquitto checks delivery against the ACLs again.
    assert nothing_on(bob, "chat/c1/msg", 0.5)
