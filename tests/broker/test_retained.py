"""Retained messages delivered on SUBSCRIBE: they must not hold up the subscriber's connection.

A retained message goes out after the SUBACK, through the same ordered delivery path as live
messages, so the connection keeps reading the subscriber's PUBACK/PUBREC/PUBCOMP meanwhile: the
QoS 1 and QoS 2 handshakes complete and the next live message follows at once. A client that never
acknowledges leaves the delivery in flight (resent on reconnect), with no error in the broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.mqtt.codec import Pingreq
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.inproc import InProcessBroker
from tests.broker.mqtt import Mqtt
from tests.broker.raw import RawClient, connect, subscribe

pytestmark = pytest.mark.timeout(60)


def _service(running: InProcessBroker) -> Mqtt:
    client = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token)
    assert client.connect() == 0
    return client


def _inflight(running: InProcessBroker, client_id: str) -> int:
    async def count() -> int:
        session = running.broker.sessions.get(client_id)
        return len(session[0].inflight_out) if session else -1

    return int(running.call(count()))


@pytest.mark.parametrize("qos", [1, 2])
def test_a_retained_message_on_subscribe_does_not_stall_the_next_live_one(run_broker: Any, qos: int) -> None:
    running = run_broker("ours", allow_anonymous=True)
    publisher = Mqtt(running.port, None, None)
    subscriber = Mqtt(running.port, None, None, client_id=f"ret-sub-{qos}")
    try:
        assert publisher.connect() == 0
        publisher.client.publish("news/retained", b"old", qos=qos, retain=True).wait_for_publish(5)
        assert subscriber.connect() == 0
        assert subscriber.subscribe("news/+", qos=qos) == qos
        started = time.monotonic()
        first = subscriber.expect(timeout=3)
        assert (first.payload, first.retain, first.qos) == (b"old", True, qos)
        publisher.client.publish("news/live", b"new", qos=qos).wait_for_publish(5)
        second = subscriber.expect(timeout=3)
        assert (second.payload, second.retain) == (b"new", False)
        assert time.monotonic() - started < 2  # a stalled flow only moves on after a 5 s timeout
        deadline = time.monotonic() + 3  # both handshakes complete: nothing left in flight
        while _inflight(running, f"ret-sub-{qos}") != 0:
            assert time.monotonic() < deadline, "a delivery never completed its handshake"
            time.sleep(0.02)
    finally:
        publisher.stop()
        subscriber.stop()


def test_a_subscriber_that_never_acknowledges_leaves_no_error_and_gets_the_message_again(
    run_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``chatmq chat`` triggered: the retained ``presence/{peer}`` on SUBSCRIBE. A PUBACK that
    never comes must not end in an unretrieved task exception nor block anything."""
    running = run_broker("ours")
    service = _service(running)
    client = RawClient(running.port)
    try:
        service.client.publish("presence/bob", b'{"user":"bob"}', qos=1, retain=True).wait_for_publish(5)
        with caplog.at_level(logging.DEBUG):
            client.send(connect("mute", username="alice", password=PASSWORDS["alice"], clean=False))
            assert client.read(4) == b"\x20\x02\x00\x00"
            client.send(subscribe("presence/bob", qos=1, packet_id=5))
            assert client.read(5) == b"\x90\x03\x00\x05\x01"
            delivery = client.read(64, timeout=2)
            assert delivery.startswith(b"\x33") and b'{"user":"bob"}' in delivery  # QoS 1, retain
            client.send(Pingreq().encode())  # the connection still answers while unacked
            assert client.read(2, timeout=2) == b"\xd0\x00"
            time.sleep(6)  # past amqtt's 5 s ack timeout
            assert _inflight(running, "mute") == 1
        logged = caplog.text
        assert "Task exception was never retrieved" not in logged
        assert "Timeout waiting for PUBACK" not in logged
        client.close()
        again = RawClient(running.port)
        try:  # resent on reconnect, with DUP set [MQTT-4.4.0-1]
            again.send(connect("mute", username="alice", password=PASSWORDS["alice"], clean=False))
            assert again.read(4) == b"\x20\x02\x01\x00"
            resent = again.read(64, timeout=3)
            assert resent[:1] == b"\x3b" and b'{"user":"bob"}' in resent  # DUP, QoS 1, retain
        finally:
            again.close()
    finally:
        client.close()
        service.stop()
