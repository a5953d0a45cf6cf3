"""A small asyncio MQTT 3.1.1 client for the bridge: it owns its socket and frames with the codec.

One ``MqttClient`` is one session with one broker, kept up for the bridge's whole life:

- its own thread runs an event loop (uvloop where installed) with one connection at a time; a
  connection's tasks (keepalive, the subscription) live in a task group and end with it;
- bytes are framed and parsed by ``chatmq.core.mqtt.codec``, the codec every MQTT speaker in chatmq
  uses (no second parser);
- QoS 1 both ways. Inbound messages are never acknowledged by the client: the application calls
  ``ack(message.mid, message.qos)`` once it is done (the bridge: once stored), so a slow store
  withholds PUBACKs and the broker holds back what it queues for us (back-pressure). Outbound QoS 1
  publishes stay in flight until their PUBACK; after a reconnect they are sent again (DUP) in their
  original order, before anything newer;
- reconnects forever, waiting ``RetryPolicy.delay_s`` between failed attempts (back-off with
  jitter), the credentials asked again on every attempt (a token may have expired);
- keepalive: a PINGREQ every three quarters of the keepalive period; a ping left unanswered until
  the next one ends the connection.

``publish`` and ``ack`` may be called from any thread: the frame is queued and the loop thread
writes whatever has queued up with one ``write`` (one system call for a burst). Callbacks run on
the loop thread and must not block, like paho's.

A message's ``mid`` carries the connection it arrived on: an ack for a message of a connection
that has since ended is dropped (the broker redelivers that message on the new connection, and
a packet id of the old connection may name another message on the new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chatmq.bridge.mqtt.errors import ConnectionLost, ConnectRefused, MqttError, ProtocolError
from chatmq.core.mqtt.codec import (
    CONNACK_ACCEPTED,
    CodecError,
    Connack,
    Connect,
    Decoder,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    decode,
    encode_publish,
)
from chatmq.core.netutil import disable_nagle
from chatmq.core.retry import RetryPolicy

log = logging.getLogger(__name__)

MAX_PACKET_ID = 65_535
# Reconnect forever (max_attempts is never consulted), 1 s after the first failure, up to 30 s.
RECONNECT = RetryPolicy(base_s=1.0, cap_s=30.0, max_attempts=1)
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_DUP = 0x08

OnMessage = Callable[["Message"], None]


@dataclass(frozen=True, slots=True)
class Message:
    """An inbound PUBLISH. ``mid`` is what ``ack`` takes: the connection and the packet id."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    mid: int = 0


class MqttClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        on_message: OnMessage,
        clean_session: bool = True,
        keepalive_s: int = 30,
        subscriptions: Sequence[tuple[str, int]] = (),
        credentials: Callable[[], tuple[str | None, str | None]] = lambda: (None, None),
        on_connect: Callable[[bool], None] | None = None,
        on_subscribe: Callable[[list[int]], None] | None = None,
        on_disconnect: Callable[[MqttError | OSError], None] | None = None,
        retry: RetryPolicy = RECONNECT,
        connect_timeout_s: float = 10.0,
        name: str = "mqtt-client",
    ) -> None:
        self.host, self.port = host, port
        self._client_id = client_id
        self._clean_session = clean_session
        self._keepalive_s = keepalive_s
        self._subscriptions = list(subscriptions)
        self._credentials = credentials
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_subscribe = on_subscribe
        self._on_disconnect = on_disconnect
        self._retry = retry
        self._connect_timeout_s = connect_timeout_s
        self._name = name

        # Shared with the calling threads, under _lock:
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a publish waiting for a free packet id
        self._inflight: dict[int, tuple[int, bytes]] = {}  # packet id -> (serial, PUBLISH frame)
        self._serial = 0  # QoS 1 publishes so far: ``mark`` / ``confirmed`` compare against it
        self._next_id = 1
        self._out: list[bytes] = []  # frames for the loop thread to write
        self._flush_scheduled = False
        self._live: _Connection | None = None  # CONNACKed and not lost: publishes go out now
        self._generation = 0  # connections so far; the high bits of a message's mid

        # The loop thread's own:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._current: _Connection | None = None  # the connection being set up or live
        self._established = False  # the current attempt got its CONNACK

    # --- any thread --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._live is not None

    def start(self) -> None:
        """Start the loop thread; it connects (and keeps reconnecting) in the background."""
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        self._started.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, DISCONNECT, close, and end the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send a PUBLISH. QoS 1 stays in flight (and is resent after a reconnect) until its PUBACK;
        QoS 0 made while disconnected is dropped."""
        if not qos:
            frame = encode_publish(topic, payload, 0, None, retain)
            with self._lock:
                if self._live is not None:
                    self._queue(frame)
            return
        with self._lock:
            packet_id = self._take_packet_id()
            frame = encode_publish(topic, payload, qos, packet_id, retain)
            self._serial += 1
            self._inflight[packet_id] = (self._serial, frame)
            if self._live is not None:
                self._queue(frame)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK an inbound message (``Message.mid``). Dropped when its connection is gone."""
        if not qos:
            return
        with self._lock:
            if self._live is not None and mid >> 16 == self._generation:
                self._queue(b"\x40\x02" + (mid & 0xFFFF).to_bytes(2, "big"))

    def mark(self) -> int:
        """A mark of every QoS 1 publish made so far: ``confirmed(mark)`` tells when all were PUBACKed."""
        with self._lock:
            return self._serial

    def confirmed(self, mark: int) -> bool:
        with self._lock:
            return all(serial > mark for serial, _ in self._inflight.values())

    def wait_confirmed(self, timeout: float, mark: int | None = None) -> bool:
        """Wait until every QoS 1 publish made so far (or before ``mark``) was PUBACKed; False if the
        timeout passed first."""
        if mark is None:
            mark = self.mark()
        deadline = time.monotonic() + timeout
        while not self.confirmed(mark):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def socket(self) -> Any:
        """The live connection's socket (for inspection), or None."""
        live = self._live
        return None if live is None or live.transport is None else live.transport.get_extra_info("socket")

    # --- under _lock ---------------------------------------------------------------------------
    def _take_packet_id(self) -> int:
        while len(self._inflight) >= MAX_PACKET_ID - 1:  # one id stays free for SUBSCRIBE
            if threading.get_ident() == self._loop_thread:
                raise MqttError(f"{MAX_PACKET_ID - 1} publishes in flight: no packet id is free")
            self._room.wait()
        packet_id = self._next_id
        while packet_id in self._inflight:
            packet_id = packet_id % MAX_PACKET_ID + 1
        self._next_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def _queue(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop
            assert loop is not None
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._flush)
            else:
                loop.call_soon_threadsafe(self._flush)

    # --- the loop thread -----------------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is installed wherever chatmq runs
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop_event = asyncio.Event()
        self._started.set()
        failures = 0
        while not self._stopping:
            self._established = False
            try:
                await self._session()
            except TimeoutError:  # before OSError, its base class
                error: MqttError | OSError = ConnectionLost(f"no CONNACK within {self._connect_timeout_s:g} s")
            except (MqttError, OSError) as exc:
                error = exc
            else:  # pragma: no cover - a session always ends with its reason
                error = ConnectionLost("ended")
            if self._stopping:
                return
            if self._established:
                failures = 0
                self._callback(self._on_disconnect, error)
            failures += 1
            delay = self._retry.delay_s(failures)
            log.info("mqtt %s: cannot reach %s:%d (%s); next attempt in %.1fs",
                     self._client_id, self.host, self.port, error, delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)

    async def _session(self) -> None:
        """One connection, from TCP connect to its end; raises what ended it."""
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Connection(self, loop), self.host, self.port)
                self._current = conn
                username, password = self._credentials()
                conn.write(Connect(
                    self._client_id, self._clean_session, self._keepalive_s, username,
                    None if password is None else password.encode(),
                ).encode())  # fmt: skip
                # The reader attaches the connection on the CONNACK; the timeout may still fire before
                # this await sees it: the finally below ends that connection too, never left live.
                connack = await conn.connack
            if connack.return_code != CONNACK_ACCEPTED:
                raise ConnectRefused(connack.return_code)
            # attached already, by the reader on the CONNACK itself (see _Connection.data_received)
            self._callback(self._on_connect, connack.session_present)
            async with asyncio.TaskGroup() as group:  # every task of the connection ends with it
                group.create_task(self._keepalive(conn))
                if self._subscriptions:
                    group.create_task(self._subscribe(conn))
            raise conn.closed.result()
        finally:
            if conn is not None:
                self._detach(conn)
                conn.close()

    def _attach(self, conn: _Connection) -> None:
        """CONNACKed: publishes go out on this connection from now on, the unconfirmed ones first
        (in the order they were made, DUP set)."""
        with self._lock:
            self._generation = (self._generation + 1) & 0x7FFF_FFFF
            conn.generation = self._generation
            self._out = [_with_dup(frame) for _, frame in sorted(self._inflight.values())]
            self._live = conn
            self._established = True
            if self._out:
                self._queue_flush()

    def _queue_flush(self) -> None:
        self._flush_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._flush)

    def _detach(self, conn: _Connection) -> None:
        with self._lock:
            if self._live is conn:
                self._live = None
                self._out = []
        if self._current is conn:
            self._current = None

    def _flush(self) -> None:
        with self._lock:
            out, self._out = self._out, []
            self._flush_scheduled = False
            live = self._live
        if live is not None and out:
            live.write(out[0] if len(out) == 1 else b"".join(out))

    async def _keepalive(self, conn: _Connection) -> None:
        interval = self._keepalive_s * 0.75
        while True:
            done, _ = await asyncio.wait([conn.closed], timeout=interval)
            if done:
                return
            if conn.pings_unanswered:
                conn.fail(ConnectionLost(f"no PINGRESP within {interval:.0f} s"))
                return
            conn.pings_unanswered += 1
            conn.write(_PINGREQ)

    async def _subscribe(self, conn: _Connection) -> None:
        with self._lock:
            packet_id = self._take_packet_id()
        conn.suback_id = packet_id
        conn.write(Subscribe(packet_id, self._subscriptions).encode())
        done, _ = await asyncio.wait([conn.suback, conn.closed], return_when=asyncio.FIRST_COMPLETED)
        if conn.suback in done and conn.suback.exception() is None:
            self._callback(self._on_subscribe, conn.suback.result().return_codes)

    def _shutdown(self) -> None:
        self._stopping = True
        assert self._stop_event is not None
        self._stop_event.set()
        conn = self._current
        if conn is not None:
            self._flush()
            conn.write(_DISCONNECT)
            conn.fail(ConnectionLost("stopped"))

    def _callback(self, callback: Callable[[Any], None] | None, arg: Any) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:
            log.exception("mqtt %s: a callback failed", self._client_id)

    # --- called by the connection (loop thread) ----------------------------------------------------
    def _received_publish(self, conn: _Connection, packet: Publish) -> None:
        if packet.qos > 1:
            raise ProtocolError("a QoS 2 PUBLISH (the client subscribes at QoS 1 at most)")
        mid = (conn.generation << 16) | (packet.packet_id or 0)
        message = Message(packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, mid)
        try:
            self._on_message(message)
        except Exception:
            log.exception("mqtt %s: handling a message on %s failed", self._client_id, packet.topic)

    def _received_puback(self, packet_id: int) -> None:
        with self._lock:
            if self._inflight.pop(packet_id, None) is not None and len(self._inflight) == MAX_PACKET_ID - 2:
                self._room.notify_all()


def _with_dup(frame: bytes) -> bytes:
    return bytes((frame[0] | _DUP,)) + frame[1:]


class _Connection(asyncio.Protocol):
    """One TCP connection: bytes in through the codec's decoder, packets to the client."""

    def __init__(self, client: MqttClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._decoder = Decoder()
        self.transport: asyncio.Transport | None = None
        self.generation = 0
        self.connack: asyncio.Future[Connack] = loop.create_future()
        self.suback: asyncio.Future[Suback] = loop.create_future()
        self.suback_id = 0
        self.closed: asyncio.Future[MqttError] = loop.create_future()  # why it ended
        self.pings_unanswered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            disable_nagle(sock)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        client = self._client
        try:
            while (frame := decoder.next_frame()) is not None:
                packet = decode(*frame)
                kind = type(packet)
                if kind is Publish:
                    client._received_publish(self, packet)  # type: ignore[arg-type]
                elif kind is Puback:
                    client._received_puback(packet.packet_id)  # type: ignore[union-attr]
                elif kind is Pingresp:
                    self.pings_unanswered = 0
                elif kind is Connack and not self.connack.done():
                    # Attach before decoding what follows: a broker resuming a session sends its queued
                    # PUBLISHes right behind the CONNACK, often in the same read (RabbitMQ does), and
                    # their mids must carry this connection's generation or their PUBACKs are dropped.
                    if packet.return_code == CONNACK_ACCEPTED:  # type: ignore[union-attr]
                        client._attach(self)
                    self.connack.set_result(packet)  # type: ignore[arg-type]
                elif kind is Suback and packet.packet_id == self.suback_id and not self.suback.done():  # type: ignore[union-attr]
                    self.suback.set_result(packet)  # type: ignore[arg-type]
                else:
                    raise ProtocolError(f"unexpected {kind.__name__} from the broker")
        except (CodecError, ProtocolError) as exc:
            self.fail(exc if isinstance(exc, MqttError) else ProtocolError(str(exc)))

    def fail(self, reason: MqttError) -> None:
        """End the connection for ``reason`` (written data is flushed first)."""
        self._end(reason)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(ConnectionLost(f"connection lost: {exc}" if exc else "closed by the broker"))

    def _end(self, reason: MqttError) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        for waiting in (self.connack, self.suback):
            if not waiting.done():
                waiting.set_exception(reason)
                waiting.exception()  # retrieved: no "never retrieved" warning when nobody waits
