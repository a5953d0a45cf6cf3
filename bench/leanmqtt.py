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
import time
from collections.abc import Callable
from typing import Any

from chatmq.core.mqtt.codec import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Puback,
    Suback,
    Subscribe,
    decode,
    decode_publish,
    encode_publish,
)

_PUBLISH = 3
_PINGREQ = b"\xc0\x00"
_DISCONNECT = Disconnect().encode()


class MqttRefused(Exception):
    """CONNACK with a non-zero return code (4 bad credentials, 5 not authorized, ...)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"CONNACK return code {code}")
        self.code = code


OnMessage = Callable[["LeanClient", str, bytes], None]


class LeanClient(asyncio.Protocol):
    """One connection at a time; ``connect()`` may be called again after the connection was lost."""

    __slots__ = (
        "_acks",
        "_decoder",
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
        self._decoder = Decoder()
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

    async def connect(
        self, host: str, port: int, *, clean: bool = False, timeout: float = 30.0, source: str | None = None
    ) -> bool:
        """Open the socket (from ``source``, a local address, when given), send CONNECT and wait for
        CONNACK; returns the session-present flag."""
        loop = asyncio.get_running_loop()
        self._decoder = Decoder()
        self.lost = loop.create_future()
        local = None if source is None else (source, 0)
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port, local_addr=local), timeout)
        self._waiter = loop.create_future()
        password = None if self.password is None else self.password.encode()
        self._send(Connect(self.client_id, clean, self.keepalive, self.username, password).encode())
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
        self._send(Subscribe(self._packet_id(), filters).encode())
        return list(await asyncio.wait_for(self._waiter, timeout))

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> asyncio.Future[None] | None:
        """Send a PUBLISH; at QoS 1 the returned future completes on its PUBACK."""
        if qos == 0:
            self._send(encode_publish(topic, payload))
            return None
        packet_id = self._packet_id()
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[packet_id] = acked
        self._send(encode_publish(topic, payload, qos, packet_id))
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
        decoder = self._decoder
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            first, body = frame
            if first >> 4 == _PUBLISH:  # the hot path: no dispatch on a packet object
                message = decode_publish(first, body)
                if message.qos:
                    self._send(Puback(message.packet_id).encode())  # type: ignore[arg-type]
                if self.on_message is not None:
                    self.on_message(self, message.topic, message.payload)
            else:
                self._packet_received(decode(first, body))

    def _packet_received(self, packet: Any) -> None:
        if isinstance(packet, Puback):
            acked = self._acks.pop(packet.packet_id, None)
            if acked is not None and not acked.done():
                acked.set_result(None)
        elif isinstance(packet, Connack):
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result((packet.return_code, packet.session_present))
        elif isinstance(packet, Suback) and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(packet.return_codes)
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
