"""A TCP proxy the tests can cut: a flaky link between a client and the real broker; and a tap
on it that reads the MQTT packets going each way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bench.leanmqtt import take_packet
from chatcore.netutil import free_port

Tap = Callable[[int, str, bytes], None]  # (connection number, "up" to the broker or "down", bytes)


class FlakyLink:
    """Forwards 127.0.0.1:port to the target. ``cut()`` drops every live connection (no MQTT
    DISCONNECT reaches the broker: an abrupt loss on both sides); ``down()`` also refuses new ones
    until ``up()``. ``tap`` sees every chunk forwarded."""

    def __init__(self, target_port: int, tap: Tap | None = None) -> None:
        self.target_port = target_port
        self.tap = tap
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepting = True
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._accepting:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                except OSError:
                    client.close()
                    continue
                self._sockets += [client, upstream]
                self.connections += 1
                number = self.connections
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, number, way), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, number: int, way: str) -> None:
        try:
            while data := src.recv(65536):
                if self.tap is not None:
                    self.tap(number, way, data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def down(self) -> None:
        with self._lock:
            self._accepting = False
        self.cut()

    def up(self) -> None:
        with self._lock:
            self._accepting = True

    def close(self) -> None:
        self.down()
        self._listener.close()


@dataclass(frozen=True)
class Packet:
    connection: int
    way: str  # "up": client to broker; "down": broker to client
    kind: int  # MQTT control packet type: 3 PUBLISH, 4 PUBACK, ...
    qos: int
    packet_id: int | None
    topic: str | None
    retain: bool


class MqttTap:
    """Reassembles the MQTT 3.1.1 packets of each connection and direction (pass it as a FlakyLink's tap)."""

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self._buffers: dict[tuple[int, str], bytearray] = {}
        self._lock = threading.Lock()

    def __call__(self, number: int, way: str, data: bytes) -> None:
        with self._lock:
            buffer = self._buffers.setdefault((number, way), bytearray())
            buffer += data
            while (packet := _next_packet(buffer, number, way)) is not None:
                self.packets.append(packet)

    def snapshot(self) -> list[Packet]:
        with self._lock:
            return list(self.packets)


def _next_packet(buffer: bytearray, number: int, way: str) -> Packet | None:
    """Take one whole packet off the front of ``buffer``; None until one is complete."""
    taken = take_packet(buffer)
    if taken is None:
        return None
    first, body = taken
    kind, qos = first >> 4, (first >> 1) & 3
    topic, packet_id = None, None
    if kind == 3:
        size = int.from_bytes(body[:2], "big")
        topic = body[2:2 + size].decode()
        if qos:
            packet_id = int.from_bytes(body[2 + size:4 + size], "big")
    elif kind in (4, 5, 6, 7):
        packet_id = int.from_bytes(body[:2], "big")
    return Packet(number, way, kind, qos if kind == 3 else 0, packet_id, topic, kind == 3 and bool(first & 1))
