"""A TCP proxy the tests can cut: a flaky link between a client and the real broker; and a tap
on it that reads the MQTT packets going each way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from chatmq.core.mqtt import codec
from chatmq.core.netutil import free_port

Tap = Callable[[int, str, bytes], None]  # (connection number, "up" to the broker or "down", bytes)
Refuse = Callable[[bytes], bool]  # a chunk going up: True drops its connection instead of forwarding it


class FlakyLink:
    """Forwards 127.0.0.1:port to the target. ``cut()`` drops every live connection (no MQTT
    DISCONNECT reaches the broker: an abrupt loss on both sides); ``down()`` also refuses new ones
    until ``up()``. ``tap`` sees every chunk forwarded; ``refuse`` may drop a connection at a
    chunk going up instead (e.g. the request line of one HTTP route: see ``http_route``)."""

    def __init__(self, target_port: int, tap: Tap | None = None, refuse: Refuse | None = None) -> None:
        self.target_port = target_port
        self.tap = tap
        self.refuse = refuse
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
                if way == "up" and self.refuse is not None and self.refuse(data):
                    break  # dropped, both sides: to the client the server is out of reach
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


def http_route(method: str, path: str, when: Callable[[], bool] = lambda: True) -> Refuse:
    """A FlakyLink ``refuse`` for one HTTP route (while ``when()``): a chunk that starts with its
    request line (HTTP/1.1 clients write a small request's head in one piece)."""
    line = f"{method} {path} ".encode()
    return lambda data: data.startswith(line) and when()


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
    """Decodes the MQTT 3.1.1 packets of each connection and direction (pass it as a FlakyLink's tap)."""

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self._decoders: dict[tuple[int, str], codec.Decoder] = {}
        self._lock = threading.Lock()

    def __call__(self, number: int, way: str, data: bytes) -> None:
        with self._lock:
            decoder = self._decoders.setdefault((number, way), codec.Decoder())
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                self.packets.append(_summary(number, way, *frame))

    def snapshot(self) -> list[Packet]:
        with self._lock:
            return list(self.packets)


def _summary(number: int, way: str, first: int, body: bytes) -> Packet:
    packet = codec.decode(first, body)
    if isinstance(packet, codec.Publish):
        return Packet(number, way, first >> 4, packet.qos, packet.packet_id, packet.topic, packet.retain)
    return Packet(number, way, first >> 4, 0, getattr(packet, "packet_id", None), None, False)
