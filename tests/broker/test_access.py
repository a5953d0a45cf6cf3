"""Every rule of chatmq.core.access, enforced by the running broker.

SUBSCRIBE is observed through real SUBACK codes; PUBLISH through a service subscriber on ``#``
that must see a marker publish but never the denied one sent before it on the same connection
(amqtt handles one connection's publishes in order).
"""

from __future__ import annotations

import pytest

from tests.broker.conftest import Clients
from tests.broker.mqtt import SUBACK_FAILURE, Received

pytestmark = pytest.mark.timeout(60)

GRANTED = 1  # the tests subscribe at QoS 1

# (filter, alice's SUBACK); alice is in c1 (with bob), not in c2 (bob and carol).
SUBSCRIPTIONS = [
    ("chat/c1/msg", GRANTED),  # member reads the conversation
    ("chat/c2/msg", SUBACK_FAILURE),  # non-member
    ("chat/nope/msg", SUBACK_FAILURE),  # unknown conversation
    ("chat/+/msg", SUBACK_FAILURE),  # wildcard across conversations
    ("#", SUBACK_FAILURE),
    ("chat/#", SUBACK_FAILURE),
    ("chat/c1/#", SUBACK_FAILURE),
    ("+/c1/msg", SUBACK_FAILURE),
    ("chat/c1/typing/+", GRANTED),  # the one wildcard a member may use in a conversation
    ("chat/c2/typing/+", SUBACK_FAILURE),
    ("chat/c1/typing/bob", GRANTED),
    ("chat/c1/send/alice", SUBACK_FAILURE),  # send topics are read by the service only
    ("chat/c1/send/+", SUBACK_FAILURE),
    ("user/alice/ack", GRANTED),
    ("user/bob/ack", SUBACK_FAILURE),  # another user's acks
    ("user/+/ack", SUBACK_FAILURE),
    ("presence/alice/+", GRANTED),  # own devices
    ("presence/alice/phone", GRANTED),
    ("presence/bob/+", SUBACK_FAILURE),  # someone else's devices
    ("presence/bob/phone", SUBACK_FAILURE),
    ("presence/bob", GRANTED),  # shares c1 with alice
    ("presence/carol", SUBACK_FAILURE),  # shares nothing with alice
    ("presence/alice", GRANTED),
    ("presence/+", SUBACK_FAILURE),
    ("foo/bar", SUBACK_FAILURE),  # outside the chat namespaces
    ("$SYS/#", SUBACK_FAILURE),
]


def test_subscribe_rules(clients: Clients) -> None:
    alice = clients.user("alice")
    got = {topic: alice.subscribe(topic) for topic, _ in SUBSCRIPTIONS}
    assert got == dict(SUBSCRIPTIONS)


def test_service_may_subscribe_to_everything(clients: Clients) -> None:
    service = clients.service()
    for topic in ("#", "chat/+/send/+", "presence/+/+", "user/alice/ack"):
        assert service.subscribe(topic) == GRANTED


# (topic alice publishes to, delivered?)
PUBLISHES = [
    ("chat/c1/send/bob", False),  # spoofed sender
    ("chat/c2/send/alice", False),  # non-member
    ("chat/c1/typing/bob", False),  # spoofed typing
    ("chat/c2/typing/alice", False),
    ("chat/c1/msg", False),  # msg, acks and user presence are written by the server only
    ("user/alice/ack", False),
    ("user/bob/ack", False),
    ("presence/alice", False),
    ("presence/bob/phone", False),  # another user's device presence
    ("foo/bar", False),
    ("chat/c1/send/alice", True),
    ("chat/c1/typing/alice", True),
    ("presence/alice/phone", True),
]


@pytest.mark.parametrize(("topic", "delivered"), PUBLISHES)
def test_publish_rules(clients: Clients, topic: str, delivered: bool) -> None:
    service = clients.service()
    assert service.subscribe("#") == GRANTED
    alice = clients.user("alice")
    probe = b'{"typing": true}' if "/typing/" in topic else b"probe"  # typing payloads are checked
    alice.publish(topic, probe)
    marker = b"marker"
    alice.publish("chat/c1/send/alice", marker)
    seen = service.wait_for(marker) + service.drain()
    probes = [m for m in seen if m.payload == probe]
    assert probes == ([Received(topic, probe)] if delivered else [])


def test_receive_is_checked_per_subscriber(clients: Clients) -> None:
    """A message on a topic reaches the members subscribed to it and nobody else, whatever they hold."""
    service = clients.service()
    alice, bob, carol = clients.user("alice"), clients.user("bob"), clients.user("carol")
    for client in (alice, bob):
        assert client.subscribe("chat/c1/msg") == GRANTED
    assert carol.subscribe("chat/c1/msg") == SUBACK_FAILURE
    service.publish("chat/c1/msg", b"hello c1")
    assert alice.expect().payload == b"hello c1"
    assert bob.expect().payload == b"hello c1"
    assert carol.drain(0.3) == []


def test_presence_visibility(clients: Clients) -> None:
    service = clients.service()
    alice = clients.user("alice")
    assert alice.subscribe("presence/bob") == GRANTED
    assert alice.subscribe("presence/alice/+") == GRANTED
    service.publish("presence/carol", b"carol online")  # alice may not see carol: not delivered
    service.publish("presence/bob", b"bob online")
    service.publish("presence/alice/tablet", b"tablet online")
    got = [alice.expect().payload, alice.expect().payload]
    assert sorted(got) == [b"bob online", b"tablet online"]
    assert alice.drain() == []
