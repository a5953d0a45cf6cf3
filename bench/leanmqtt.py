"""A lean asyncio MQTT 3.1.1 client for load generation: thousands of connections per process.

paho costs a thread (or at least a socket loop and a dozen objects) per client; here a connection
is one ``asyncio.Protocol`` with a bytearray and a few fields, and no task of its own: a single
pinger per process sends PINGREQs, and connect/subscribe are awaited only while they are pending.
It speaks just what the benchmarks need: CONNECT (username/password, clean or persistent session),
SUBSCRIBE, PUBLISH QoS 0/1 (sending and receiving), PUBACK, PINGREQ and DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from typing import Any

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


class MqttRefused(Exception):
    """CONNACK with a non-zero return code (4 bad credentials, 5 not authorized, ...)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"CONNACK return code {code}")
        self.code = code


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    size, length = bytearray(), len(body)
    while True:
        byte, length = length % 128, length // 128
        size.append(byte | 0x80 if length else byte)
        if not length:
            return bytes([first]) + bytes(size) + body


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int, clean: bool) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(0x10, body)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(topic) + bytes([qos]) for topic, qos in filters)
    return _packet(0x82, body)


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(0x30 | (qos << 1), body)


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


OnMessage = Callable[["LeanClient", str, bytes], None]


def take_packet(buffer: bytearray) -> tuple[int, bytes] | None:
    """Take one whole packet off the front of ``buffer``: (first byte, body); None until one is complete."""
    length, multiplier, index = 0, 1, 1
    while True:
        if index >= len(buffer):
            return None  # the remaining-length field itself is incomplete
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
    end = index + length
    if len(buffer) < end:
        return None
    packet = buffer[0], bytes(buffer[index:end])
    del buffer[:end]
    return packet


class LeanClient(asyncio.Protocol):
    """One connection at a time; ``connect()`` may be called again after the connection was lost."""

    __slots__ = (
        "_acks",
        "_buffer",
        "_next_id",
        "_waiter",
        "client_id",
        "keepalive",
        "last_sent",
        "lost",
        "on_message",
        "password",
        "session_present",
        "transport",
        "username",
    )  # fmt: skip

    def __init__(
        self, client_id: str, username: str | None, password: str | None, keepalive: int = 60,
        on_message: OnMessage | None = None,
    ) -> None:  # fmt: skip
        self.client_id, self.username, self.password = client_id, username, password
        self.keepalive = keepalive
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Any] | None = None  # the CONNACK or SUBACK being awaited
        self._acks: dict[int, asyncio.Future[None]] = {}  # PUBACKs awaited by publish()
        self._next_id = 0
        self.last_sent = 0.0
        self.session_present = False
        self.lost: asyncio.Future[None] | None = None

    # ---- API -----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def connect(self, host: str, port: int, *, clean: bool = False, timeout: float = 30.0) -> bool:
        """Open the socket, send CONNECT and wait for CONNACK; returns the session-present flag."""
        loop = asyncio.get_running_loop()
        self._buffer.clear()
        self.lost = loop.create_future()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port), timeout)
        self._waiter = loop.create_future()
        self._send(connect_packet(self.client_id, self.username, self.password, self.keepalive, clean))
        try:
            code, present = await asyncio.wait_for(self._waiter, timeout)
        except BaseException:
            self.close()
            raise
        if code:
            self.close()
            raise MqttRefused(code)
        self.session_present = present
        return present

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 30.0) -> list[int]:
        """SUBSCRIBE and wait for the SUBACK; returns the granted codes (0x80 = refused)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._send(subscribe_packet(self._packet_id(), filters))
        return list(await asyncio.wait_for(self._waiter, timeout))

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> asyncio.Future[None] | None:
        """Send a PUBLISH; at QoS 1 the returned future completes on its PUBACK."""
        if qos == 0:
            self._send(publish_packet(topic, payload, 0))
            return None
        packet_id = self._packet_id()
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[packet_id] = acked
        self._send(publish_packet(topic, payload, qos, packet_id))
        return acked

    def ping(self) -> None:
        self._send(_PINGREQ)

    def disconnect(self) -> None:
        if self.connected:
            self._send(_DISCONNECT)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ---- protocol --------------------------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"{self.client_id}: not connected")
        self.transport.write(data)
        self.last_sent = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = ConnectionError(f"{self.client_id}: connection lost ({exc!r})")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
            self._waiter.exception()  # whoever awaits it gets it; nobody else must be warned
        for acked in self._acks.values():
            if not acked.done():
                acked.set_exception(error)
        self._acks.clear()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (packet := take_packet(self._buffer)) is not None:
            self._packet_received(*packet)

    def _packet_received(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 3
            (topic_len,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + topic_len].decode()
            offset = 2 + topic_len
            if qos:
                (packet_id,) = struct.unpack_from("!H", body, offset)
                offset += 2
                self._send(puback_packet(packet_id))
            if self.on_message is not None:
                self.on_message(self, topic, body[offset:])
        elif kind == PUBACK:
            acked = self._acks.pop(struct.unpack_from("!H", body)[0], None)
            if acked is not None and not acked.done():
                acked.set_result(None)
        elif kind == CONNACK:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result((body[1], bool(body[0] & 1)))
        elif kind == SUBACK and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(body[2:])
        # PINGRESP and anything else: nothing to do


async def keep_alive(clients: list[LeanClient], interval_s: float = 1.0) -> None:
    """One task for every client of a process: PINGREQ when a client was silent for half its keepalive."""
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        for client in clients:
            if client.keepalive and client.connected and now - client.last_sent >= client.keepalive / 2:
                with contextlib.suppress(ConnectionError):
                    client.ping()
