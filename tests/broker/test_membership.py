"""Membership changes made by another process reach the running broker within one second."""

from __future__ import annotations

import itertools
import time

import pytest

from chatmq.core.store import Store
from tests.broker.conftest import Clients
from tests.broker.mqtt import SUBACK_FAILURE, Mqtt

pytestmark = pytest.mark.timeout(60)

PROPAGATION_S = 1.0
_convs = itertools.count(1)


def new_conv(store: Store, *members: str) -> str:
    conv = f"m{next(_convs)}"
    store.create_conversation(conv, list(members))
    return conv


def seconds_until_granted(client: Mqtt, topic: str, limit: float = 3.0) -> float:
    start = time.monotonic()
    while client.subscribe(topic) == SUBACK_FAILURE:
        assert time.monotonic() - start < limit, f"{topic} never granted"
        time.sleep(0.02)
    return time.monotonic() - start


def test_added_member_may_subscribe_and_publish_without_restart(clients: Clients, admin_store: Store) -> None:
    conv = new_conv(admin_store, "bob")
    service = clients.service()
    assert service.subscribe("chat/+/send/+") == 1
    alice = clients.user("alice")
    assert seconds_until_granted(clients.user("bob"), f"chat/{conv}/msg") < PROPAGATION_S
    assert alice.subscribe(f"chat/{conv}/msg") == SUBACK_FAILURE

    admin_store.add_member(conv, "alice")
    assert seconds_until_granted(alice, f"chat/{conv}/msg") < PROPAGATION_S
    alice.publish(f"chat/{conv}/send/alice", b"now a member")
    assert service.expect().payload == b"now a member"


def test_removed_member_loses_delivery_on_existing_subscription(clients: Clients, admin_store: Store) -> None:
    conv = new_conv(admin_store, "alice", "bob")
    service, alice, bob = clients.service(), clients.user("alice"), clients.user("bob")
    topic = f"chat/{conv}/msg"
    seconds_until_granted(alice, topic)
    assert bob.subscribe(topic) == 1
    service.publish(topic, b"before")
    assert alice.expect().payload == b"before"
    assert bob.expect().payload == b"before"
    assert service.subscribe("chat/+/send/+") == 1
    alice.publish(f"chat/{conv}/send/alice", b"while a member")  # the broker now remembers "allowed"
    assert [m.payload for m in service.wait_for(b"while a member")] == [b"while a member"]

    admin_store.remove_member(conv, "alice")
    removed_at = time.monotonic()
    sent_at: dict[bytes, float] = {}
    for n in itertools.count():  # keep publishing well past the deadline
        payload = f"n{n}".encode()
        sent_at[payload] = time.monotonic() - removed_at
        service.publish(topic, payload)
        bob.wait_for(payload)  # routed: alice's copy, if any, is on its way too
        if sent_at[payload] > PROPAGATION_S + 0.5:
            break
        time.sleep(0.03)
    alice_got = [m.payload for m in alice.drain(0.3)]
    last_delivery = max((sent_at[p] for p in alice_got), default=0.0)
    assert last_delivery < PROPAGATION_S, f"alice still received {alice_got}"

    # and the removed member may no longer publish there or re-subscribe
    alice.publish(f"chat/{conv}/send/alice", b"after removal")
    alice.publish("chat/c1/send/alice", b"marker")
    assert [m.payload for m in service.wait_for(b"marker")] == [b"marker"]
    assert alice.subscribe(topic) == SUBACK_FAILURE
