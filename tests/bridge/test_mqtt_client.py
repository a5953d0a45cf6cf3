"""The bridge's asyncio MQTT client (chatmq/bridge/mqtt) against a real Mosquitto, and against a raw
socket server for what a well-behaved broker never does (no PINGRESP, a refused CONNECT)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatmq.bridge.mqtt import Message, MqttClient, MqttError
from chatmq.core.mqtt.codec import Connack, Decoder, Pingreq, Puback, decode, encode_publish
from chatmq.core.retry import RetryPolicy
from tests.bridge.devices import Device
from tests.mosquitto import LocalMosquitto
from tests.stack import tcp_nodelay

FAST_RETRY = RetryPolicy(base_s=0.05, cap_s=0.2, max_attempts=1, jitter=False)


class Recorder:
    """Callbacks of one client, recorded; ``wait`` polls until a condition holds."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.connects: list[bool] = []
        self.subacks: list[list[int]] = []
        self.disconnects: list[MqttError | OSError] = []

    def wait(self, check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    broker = LocalMosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[MqttClient, Recorder]]]:
    clients: list[MqttClient] = []

    def make(host: str, port: int, **kw: Any) -> tuple[MqttClient, Recorder]:
        rec = Recorder()
        client = MqttClient(
            host, port, client_id=kw.pop("client_id", "test-bridge"), on_message=rec.messages.append,
            on_connect=rec.connects.append, on_subscribe=rec.subacks.append,
            on_disconnect=rec.disconnects.append, retry=kw.pop("retry", FAST_RETRY), **kw,
        )  # fmt: skip
        clients.append(client)
        client.start()
        return client, rec

    yield make
    for client in clients:
        client.stop()


def test_qos1_both_ways_with_manual_acks(mosquitto: LocalMosquitto, make_client: Callable[..., Any]) -> None:
    client, rec = make_client(mosquitto.host, mosquitto.port, subscriptions=[("in/+", 1)])
    rec.wait(lambda: rec.subacks == [[1]], what="SUBACK")
    assert client.connected and tcp_nodelay(client.socket()) == 1
    watcher = Device(mosquitto.host, mosquitto.port, "watcher", ["out/#"])
    try:
        for n in range(200):
            client.publish(f"out/{n % 3}", b"%d" % n, qos=1)
        assert client.wait_confirmed(5) and client.in_flight == 0
        watcher.wait_for(lambda: len(watcher.received) == 200, what="200 publishes")
        assert [int(r.payload) for r in watcher.received] == list(range(200))  # in order

        watcher.publish("in/x", b"hello", qos=1)
        rec.wait(lambda: len(rec.messages) == 1, what="the inbound message")
        (msg,) = rec.messages
        assert (msg.topic, msg.payload, msg.qos, msg.retain, msg.dup) == ("in/x", b"hello", 1, False, False)
        client.ack(msg.mid, msg.qos)
    finally:
        watcher.close()


def test_an_unacked_message_is_redelivered_to_the_next_session(
    mosquitto: LocalMosquitto, make_client: Callable[..., Any]
) -> None:
    """Back-pressure and durability: the client never PUBACKs on its own, so what the application
    did not ack comes back (DUP) on the persistent session's next connection."""
    first, rec1 = make_client(mosquitto.host, mosquitto.port, client_id="durable", clean_session=False,
                              subscriptions=[("in/+", 1)])  # fmt: skip
    rec1.wait(lambda: bool(rec1.subacks), what="SUBACK")
    sender = Device(mosquitto.host, mosquitto.port, "sender")
    try:
        sender.publish("in/a", b"one", qos=1)
        sender.publish("in/a", b"two", qos=1)
        rec1.wait(lambda: len(rec1.messages) == 2, what="two messages")
        first.ack(rec1.messages[0].mid, 1)  # "one" is done; "two" is not
        time.sleep(0.2)
        first.stop()
        stale = rec1.messages[1]

        second, rec2 = make_client(mosquitto.host, mosquitto.port, client_id="durable", clean_session=False,
                                   subscriptions=[("in/+", 1)])  # fmt: skip
        rec2.wait(lambda: len(rec2.messages) == 1, what="the redelivery")
        (again,) = rec2.messages
        assert (again.payload, again.dup) == (b"two", True)
        second.ack(stale.mid, 1)  # an ack from the ended connection is dropped, not sent on this one
        second.ack(again.mid, 1)
        time.sleep(0.3)
        assert len(rec2.messages) == 1
    finally:
        sender.close()


def test_publishes_made_while_the_broker_is_down_go_out_after_reconnecting_in_order(
    mosquitto: LocalMosquitto, make_client: Callable[..., Any]
) -> None:
    slow = RetryPolicy(base_s=2.0, cap_s=2.0, max_attempts=1, jitter=False)  # the watcher subscribes first
    client, rec = make_client(mosquitto.host, mosquitto.port, subscriptions=[("x", 0)], retry=slow)
    rec.wait(lambda: bool(rec.subacks), what="SUBACK")
    mosquitto.stop()
    rec.wait(lambda: not client.connected, what="the disconnect")
    assert len(rec.disconnects) == 1
    mark = client.mark()
    for n in range(50):
        client.publish("out/q", b"%d" % n, qos=1)
    client.publish("out/q", b"qos0 while down", qos=0)  # dropped: QoS 0 is not kept
    assert not client.confirmed(client.mark()) and client.confirmed(mark)
    mosquitto.start()
    watcher = Device(mosquitto.host, mosquitto.port, "watcher", ["out/#"])
    assert not client.connected  # the watcher is subscribed before the client is back
    try:
        assert client.wait_confirmed(10)
        watcher.wait_for(lambda: len(watcher.received) == 50, what="50 publishes")
        assert [int(r.payload) for r in watcher.received] == list(range(50))
        rec.wait(lambda: len(rec.subacks) == 2, what="subscribed again on the new session")  # SUBACK may follow
        assert rec.connects[-1] is False
    finally:
        watcher.close()


class SilentBroker:
    """A raw TCP server: CONNACKs every CONNECT with ``return_code`` (and ``after_connack`` in the
    same write), never answers a PINGREQ; records the PUBACKs it gets."""

    def __init__(self, return_code: int = 0, after_connack: bytes = b"") -> None:
        self.return_code = return_code
        self.after_connack = after_connack
        self.connects = 0
        self.closed_by_client = 0
        self.pings = 0
        self.pubacks: list[int] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        decoder = Decoder()
        with conn:
            conn.settimeout(0.1)
            while not self._stop:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    self.closed_by_client += 1
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    packet = decode(*frame)
                    if type(packet).__name__ == "Connect":
                        self.connects += 1
                        conn.sendall(Connack(self.return_code, bool(self.after_connack)).encode()
                                     + self.after_connack)
                    elif isinstance(packet, Pingreq):
                        self.pings += 1
                    elif isinstance(packet, Puback):
                        self.pubacks.append(packet.packet_id)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._server.close()


def test_an_unanswered_ping_ends_the_connection_and_it_reconnects(make_client: Callable[..., Any]) -> None:
    server = SilentBroker()
    try:
        _client, rec = make_client("127.0.0.1", server.port, keepalive_s=1)
        rec.wait(lambda: server.connects >= 2, timeout=6, what="a reconnect after the silent pings")
        assert server.pings >= 1 and "PINGRESP" in str(rec.disconnects[0])
    finally:
        server.close()


def test_a_refused_connect_is_retried_with_backoff(make_client: Callable[..., Any]) -> None:
    server = SilentBroker(return_code=5)
    try:
        client, rec = make_client("127.0.0.1", server.port)
        rec.wait(lambda: server.connects >= 3, what="three attempts")
        assert not client.connected and rec.connects == [] and rec.disconnects == []
    finally:
        server.close()


def test_a_message_right_behind_the_connack_can_be_acked(make_client: Callable[..., Any]) -> None:
    """A resumed session's queued message in the same read as the CONNACK (RabbitMQ sends them so):
    its PUBACK must go out. It was dropped once (the mid carried no connection yet), and RabbitMQ,
    which delivers at most 10 unacked messages to a consumer, then stalled the bridge for good."""
    server = SilentBroker(after_connack=encode_publish("chat/c1/send/alice", b"{}", 1, 7))
    try:
        client, rec = make_client("127.0.0.1", server.port, clean_session=False)
        rec.wait(lambda: bool(rec.messages), what="the queued message")
        client.ack(rec.messages[0].mid, 1)
        rec.wait(lambda: server.pubacks == [7], timeout=5, what="its PUBACK")
    finally:
        server.close()


def test_a_connect_timeout_right_after_the_connack_ends_that_connection() -> None:
    """The connect timeout may fire after the reader attached the connection on its CONNACK but
    before the session's await saw it: that connection must be detached and closed like any other
    that ended, not left live (publishes written to it, its socket open) beside the next one."""
    server = SilentBroker()
    rec = Recorder()
    client = MqttClient("127.0.0.1", server.port, client_id="test-bridge", on_message=rec.messages.append,
                        on_connect=rec.connects.append,
                        on_disconnect=rec.disconnects.append, retry=FAST_RETRY, connect_timeout_s=0.3)  # fmt: skip
    attach = client._attach
    slowed: list[object] = []

    def attach_then_stall(conn: Any) -> None:  # the loop busy past the deadline, once
        attach(conn)
        if not slowed:
            slowed.append(conn)
            time.sleep(0.6)

    client._attach = attach_then_stall  # type: ignore[method-assign]
    client.start()
    try:
        rec.wait(lambda: server.connects >= 2 and client.connected, what="the reconnect")
        rec.wait(lambda: server.closed_by_client >= 1, timeout=5, what="the first connection closed by the client")
        assert "CONNACK" in str(rec.disconnects[0]) and rec.connects == [False], "the session never started"
    finally:
        client.stop()
        server.close()
