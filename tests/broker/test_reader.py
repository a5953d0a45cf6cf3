"""The inline reader (chatmq/broker/reader.py): packets pipelined in one TCP write are handled in order,
QoS 1 publishes are acknowledged in order after routing, and QoS 2 keeps amqtt's handshake."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from chatmq.core.mqtt.codec import Decoder, Pubrel
from tests.broker.inproc import InProcessBroker
from tests.broker.raw import RawClient, connect, publish, subscribe

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def running(run_broker: Any) -> InProcessBroker:
    return run_broker("ours", allow_anonymous=True)


def _read_packets(client: RawClient, count: int) -> list[tuple[int, bytes]]:
    """Up to ``count`` packets as (first byte, body), framed by the codec."""
    decoder, got = Decoder(), []
    for _ in range(50):
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
        if len(got) >= count:
            break
        decoder.feed(client.read(4096, timeout=0.2))
    return got


def _connected(running: InProcessBroker, client_id: str) -> RawClient:
    client = RawClient(running.port)
    client.send(connect(client_id, keepalive=30))
    assert client.read(4) == b"\x20\x02\x00\x00"
    return client


def _pair(running: InProcessBroker, topic: str) -> tuple[RawClient, RawClient]:
    """A listener subscribed to ``topic`` at QoS 0, and a connected sender."""
    listener = _connected(running, f"listener-{topic}")
    listener.send(subscribe(topic, qos=0))
    assert listener.read(5)[:1] == b"\x90"
    return listener, _connected(running, f"sender-{topic}")


def test_subscribe_then_publish_in_one_write_delivers_to_the_new_subscription(running: InProcessBroker) -> None:
    client = _connected(running, "pipelined")
    try:
        client.send(subscribe("plain/echo", qos=1, packet_id=7) + publish("plain/echo", b"hi", qos=1, packet_id=9))
        got = _read_packets(client, 3)
        kinds = [first >> 4 for first, _ in got]
        assert kinds[0] == 9, got  # SUBACK first: the PUBLISH was handled after the SUBSCRIBE
        assert sorted(kinds[1:]) == [3, 4], got  # the echo and its PUBACK
        puback = next(body for first, body in got if first >> 4 == 4)
        assert struct.unpack("!H", puback)[0] == 9
        echo = next(body for first, body in got if first >> 4 == 3)
        assert echo.endswith(b"hi")
    finally:
        client.close()


def test_pipelined_qos1_publishes_are_acked_and_delivered_in_order(running: InProcessBroker) -> None:
    listener, sender = _pair(running, "plain/order")
    try:
        count = 40
        sender.send(b"".join(publish("plain/order", b"%03d" % n, qos=1, packet_id=n + 1) for n in range(count)))
        acks = _read_packets(sender, count)
        assert [struct.unpack("!H", body)[0] for _, body in acks] == list(range(1, count + 1))
        delivered = _read_packets(listener, count)
        assert [body[-3:] for _, body in delivered] == [b"%03d" % n for n in range(count)]
    finally:
        listener.close()
        sender.close()


def test_qos2_publish_keeps_the_full_handshake(running: InProcessBroker) -> None:
    listener, sender = _pair(running, "plain/q2")
    try:
        sender.send(publish("plain/q2", b"exactly-once", qos=2, packet_id=5))
        assert sender.read(4) == b"\x50\x02\x00\x05"  # PUBREC
        sender.send(Pubrel(5).encode())
        assert sender.read(4) == b"\x70\x02\x00\x05"  # PUBCOMP
        assert _read_packets(listener, 1)[0][1].endswith(b"exactly-once")
    finally:
        listener.close()
        sender.close()


def test_a_qos2_publish_resent_before_its_pubrel_is_routed_once(running: InProcessBroker) -> None:
    """Kept until released: a resend of the PUBLISH (DUP) before PUBREL is answered PUBREC again and
    replaces it; the PUBREL routes it once, and the next publish shows nothing else came."""
    listener, sender = _pair(running, "plain/q2once")
    try:
        sender.send(publish("plain/q2once", b"once", qos=2, packet_id=9))
        assert sender.read(4) == b"\x50\x02\x00\x09"
        sender.send(publish("plain/q2once", b"once", qos=2, packet_id=9))
        assert sender.read(4) == b"\x50\x02\x00\x09"
        sender.send(Pubrel(9).encode() + Pubrel(9).encode())  # a second PUBREL releases nothing
        assert sender.read(8) == b"\x70\x02\x00\x09" * 2
        sender.send(publish("plain/q2once", b"after", qos=1, packet_id=10))
        assert sender.read(4) == b"\x40\x02\x00\x0a"
        payloads = [body for _first, body in _read_packets(listener, 2)]
        assert payloads[0].endswith(b"once") and payloads[1].endswith(b"after")
    finally:
        listener.close()
        sender.close()


def test_pingreq_is_answered_and_a_reserved_flag_closes_the_connection(running: InProcessBroker) -> None:
    client = _connected(running, "pinger")
    try:
        client.send(b"\xc0\x00")
        assert client.read(2) == b"\xd0\x00"
        client.send(b"\xc1\x00")  # PINGREQ with a reserved flag set [MQTT-2.2.2-2]
        assert client.closed_by_peer(5)
    finally:
        client.close()
