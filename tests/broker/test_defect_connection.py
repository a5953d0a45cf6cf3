"""Regression tests for amqtt 0.12.1's connection-level defects: each runs against stock amqtt
(xfail strict: the defect is real) and against ChatBroker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.inproc import BOTH, InProcessBroker
from tests.broker.mqtt import NOT_AUTHORIZED, Mqtt
from tests.broker.raw import RawClient, connect, publish

pytestmark = pytest.mark.timeout(60)


def _service(running: InProcessBroker, **kwargs: Any) -> Mqtt:

    client = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token, **kwargs)
    assert client.connect() == 0
    return client


@pytest.mark.parametrize("kind", BOTH)
def test_keepalive_expiry_drops_the_client_and_sends_its_will(run_broker: Any, kind: str) -> None:
    running = run_broker(kind)
    watcher = _service(running)
    try:
        assert watcher.subscribe("presence/+/+") == 1
        silent = RawClient(running.port)
        silent.send(connect("alice-dev", username="alice", password=PASSWORDS["alice"], keepalive=1,
                            will=("presence/alice/dev1", b"offline")))
        assert silent.read(4) == b"\x20\x02\x00\x00"
        started = time.monotonic()
        # keepalive 1 s: the broker must give up after 1.5 s, and publish the will
        assert watcher.expect(timeout=4).payload == b"offline"
        assert time.monotonic() - started >= 1.4
        assert silent.closed_by_peer(timeout=2)
        silent.close()
    finally:
        watcher.stop()


@pytest.mark.parametrize("kind", BOTH)
def test_mqtt5_connect_is_refused_with_unacceptable_protocol_version(run_broker: Any, kind: str) -> None:
    running = run_broker(kind)
    client = RawClient(running.port)
    try:
        client.send(connect("v5", username="alice", password=PASSWORDS["alice"], level=5))
        assert client.read(4, timeout=3) == b"\x20\x02\x00\x01"
        assert client.closed_by_peer(timeout=3)
    finally:
        client.close()


@pytest.mark.parametrize("kind", BOTH)
def test_publish_to_a_dollar_topic_is_dropped_and_the_connection_keeps_working(run_broker: Any, kind: str) -> None:
    """As Mosquitto does (and docs/protocol.md says): a client publish to a ``$`` topic is
    acknowledged and dropped [MQTT-4.7.2-1: ``$`` topics are the server's]; the connection stays."""
    running = run_broker(kind)
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    watcher = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token)
    assert alice.connect() == 0
    assert watcher.connect() == 0
    try:
        assert watcher.subscribe("$SYS/#") == 1
        alice.publish("$SYS/fake", b"x", qos=1)  # PUBACKed
        assert alice.subscribe("chat/c1/msg", timeout=3) == 1  # stock: no SUBACK ever again
        assert watcher.drain(0.3) == []  # and routed to nobody
    finally:
        alice.stop()
        watcher.stop()


@pytest.mark.parametrize("kind", BOTH)
def test_publish_with_a_wildcard_topic_closes_the_connection(run_broker: Any, kind: str) -> None:
    running = run_broker(kind)
    client = RawClient(running.port)
    try:
        client.send(connect("wild", username="alice", password=PASSWORDS["alice"]))
        assert client.read(4) == b"\x20\x02\x00\x00"
        client.send(publish("chat/+/send/alice", b"x", qos=1))
        assert client.closed_by_peer(timeout=3)  # MQTT-3.3.2-2; stock keeps a zombie socket
    finally:
        client.close()


@pytest.mark.parametrize("kind", BOTH)
def test_failed_login_with_a_live_client_id_changes_nothing(run_broker: Any, kind: str) -> None:
    running = run_broker(kind)
    service = _service(running)
    victim = Mqtt(running.port, "alice", PASSWORDS["alice"], client_id="alice-phone", clean_session=False)
    try:
        assert victim.connect() == 0
        assert victim.subscribe("chat/c1/msg") == 1
        for clean in (False, True):
            attacker = Mqtt(running.port, "alice", "wrong", client_id="alice-phone", clean_session=clean)
            assert attacker.connect() == NOT_AUTHORIZED
            assert attacker.session_present is False
        service.publish("chat/c1/msg", b"still here")
        # the victim was neither kicked nor unsubscribed
        assert victim.expect(timeout=3).payload == b"still here"
        assert victim.client.is_connected()
        # no zombie session is left behind by the failed logins
        assert set(running.broker.sessions) == {"alice-phone", service.client._client_id.decode()}
    finally:
        victim.stop()
        service.stop()


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_packet_size_limit_is_the_same_on_tcp_and_websocket(
    run_broker: Any, kind: str, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = run_broker(kind, max_packet_bytes=64 * 1024)
    receiver = _service(running)
    sender = _service(running, transport=transport) if transport == "tcp" else None
    if sender is None:

        token = issue_token(SECRET, SERVICE_USER, 300, service=True).token
        sender = Mqtt(running.ws_port, SERVICE_USER, token, transport="websockets")
        assert sender.connect() == 0
    try:
        assert receiver.subscribe("chat/c1/msg") == 1
        sender.publish("chat/c1/msg", b"s" * 60_000)
        assert receiver.expect(timeout=5).payload == b"s" * 60_000
        sender.client.publish("chat/c1/msg", b"L" * 500_000, qos=1)  # under websockets 1 MiB cap
        deadline = time.monotonic() + 10
        while sender.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sender.client.is_connected()
        assert receiver.drain(settle=0.5) == []  # never delivered
        assert "exceeds max_packet_bytes=65536" in caplog.text
    finally:
        sender.stop()
        receiver.stop()
