"""Deliveries to connected sessions: one outbox per connection, written in order, batched.

A delivery to an idle TCP connection is written to its transport at the end of the loop turn
(``_write_now``: one write per connection per turn for every delivery routed to it). Else the
session gets an ``Outbox``: a list drained by ONE long-lived writer task per session (not one task
per packet) that writes a batch of PUBLISH packets under the handler's write lock and drains once.
Per-subscriber order is publish order; a slow subscriber delays only itself. QoS 1 deliveries are
pipelined: the message goes to ``session.inflight_out`` and its PUBACK removes it there
(chatmq/broker/reader.py; no future per delivery), instead of awaiting each PUBACK in turn. An
unacknowledged QoS 1 delivery stays in ``inflight_out`` when the connection drops, and ``replay``
resends it with DUP when the session reconnects, before anything routed after the reconnect.
A connection that goes away with deliveries queued hands their QoS>0 ones to the session's offline
queue (chatmq/broker/offline.py). QoS 2 deliveries are written and tracked the same way (their
PUBREC and PUBCOMP are read by chatmq/broker/reader.py).
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OutgoingApplicationMessage, Session

from chatmq.broker import amqtt_seam
from chatmq.broker.offline import keep_offline
from chatmq.broker.session import SmallEvent
from chatmq.broker.session_store import QueuedMessage
from chatmq.core.mqtt.codec import Pubrel, encode_publish

log = logging.getLogger(__name__)

# How often writers of closed connections are woken so they can end (one timer, not one per writer).
_OUTBOX_SWEEP_S = 10.0
_UNSENT_FLUSH_BYTES = 8 * 1024
_DIRECT_WRITE_MAX = 64 * 1024  # above this many unsent bytes a connection's deliveries queue for its writer

Sessions = dict[str, tuple[Session, BrokerProtocolHandler]]  # amqtt's: client id -> (session, its handler)


class Outbox:
    """The deliveries waiting for one connection, and the single task that writes them."""

    __slots__ = ("busy", "handler", "held", "overflowing", "queue", "task", "wake")

    def __init__(self, handler: BrokerProtocolHandler) -> None:
        self.handler = handler
        # a list and a SmallEvent: an empty deque and an asyncio.Event cost ~1.6 KiB per idle connection
        self.queue: list[tuple[str, bytes | bytearray, int, bool]] = []
        self.wake = SmallEvent()
        self.task: asyncio.Task[None] | None = None
        self.overflowing = False
        self.busy = False  # the writer task holds a batch not fully written yet
        self.held = False  # a reconnect's replay goes first: deliveries wait in the queue meanwhile


class Deliveries:
    """The outboxes of every connected session (see the module docstring)."""

    def __init__(self, sessions: Sessions, outbox_limit: int = 100_000) -> None:
        self.sessions = sessions  # the live handler of each session
        self.outbox_limit = outbox_limit  # queued deliveries above which QoS 0 ones are dropped
        self._outboxes: dict[str, Outbox] = {}
        self._unsent: dict[BrokerProtocolHandler, bytearray] = {}  # direct deliveries of this loop turn
        self._unsent_scheduled = False
        self._outbox_sweep: asyncio.TimerHandle | None = None

    def undelivered(self, session: Session) -> list[tuple[str, bytes | bytearray, int]]:
        """QoS>0 deliveries still waiting in a session's outbox (not written yet, so not in
        ``inflight_out``): what a shutdown must persist besides ``inflight_out`` and the offline queue."""
        box = self._outboxes.get(session.client_id or "")
        if box is None:
            return []
        return [(topic, data, qos) for topic, data, qos, _retain in box.queue if qos in (QOS_1, QOS_2)]

    async def close(self) -> None:
        """After routing stops, let every outbox writer finish (sessions are closed by then: each
        hands its QoS>0 leftovers to the offline queue) so no writer task outlives the broker."""
        if self._outbox_sweep is not None:
            self._outbox_sweep.cancel()
            self._outbox_sweep = None
        tasks = [box.task for box in self._outboxes.values() if box.task is not None]
        for box in self._outboxes.values():
            box.wake.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._outboxes.clear()

    def enqueue(self, session: Session, topic: str, data: bytes | bytearray, qos: int, retain: bool = False) -> None:
        handler = self.sessions.get(session.client_id or "", (None, None))[1]
        if handler is None:
            return
        client_id = session.client_id or ""
        box = self._outboxes.get(client_id)
        if box is not None and box.handler is not handler:
            box.wake.set()  # the old connection's writer sees the handler change and ends
            box = None
        idle = box is None or (not box.queue and not box.busy and not box.held)
        if idle and self._write_now(handler, session, topic, data, qos, retain):
            return
        if box is None:
            box = self._outboxes[client_id] = Outbox(handler)
        if qos == QOS_0 and len(box.queue) >= self.outbox_limit:
            if not box.overflowing:
                log.warning("outbox of %s is full (%d); dropping QoS 0 deliveries", client_id, len(box.queue))
                box.overflowing = True
            return
        box.queue.append((topic, data, qos, retain))
        self._wake(client_id, box)

    def _wake(self, client_id: str, box: Outbox) -> None:
        """Start the connection's writer task if it has none, and wake it."""
        if box.task is None:
            box.task = asyncio.create_task(self._pump(client_id, box), name=f"outbox:{client_id}")
            if self._outbox_sweep is None:
                self._outbox_sweep = asyncio.get_running_loop().call_later(_OUTBOX_SWEEP_S, self._sweep_outboxes)
        box.wake.set()

    def hold(self, session: Session, handler: BrokerProtocolHandler) -> None:
        """A (re)connecting session: deliveries routed from now on wait in its outbox until
        ``replay`` has written what the session was owed before, so nothing overtakes it."""
        client_id = session.client_id or ""
        old = self._outboxes.get(client_id)
        if old is not None and old.handler is not handler:
            old.wake.set()  # the previous connection's writer sees the handler change and ends
            old = None
        box = old or Outbox(handler)
        box.held = True
        self._outboxes[client_id] = box

    async def replay(
        self, session: Session, handler: BrokerProtocolHandler, queued: list[QueuedMessage]
    ) -> None:
        """What a reconnecting session is owed, oldest first, then release the held deliveries:
        deliveries written to an earlier connection and never acknowledged, again with DUP set
        [MQTT-4.4.0-1] (a QoS 2 one whose PUBREC came: its PUBREL again), pipelined (the reader
        takes their acknowledgements out of ``inflight_out``), then the messages queued while it
        was offline (at their QoS, retain off [MQTT-3.3.1-9])."""
        box = self._outboxes.get(session.client_id or "")
        try:
            chunks: list[bytes] = []
            for packet_id, message in sorted(session.inflight_out.items()):
                if message.qos == QOS_2 and message.pubrec_packet is not None:
                    chunks.append(Pubrel(packet_id).encode())
                else:
                    chunks.append(encode_publish(message.topic, message.data, message.qos or QOS_1, packet_id,
                                                 bool(message.retain), dup=True))  # fmt: skip
            await self._write(handler, chunks)
            if box is not None and box.handler is handler:
                box.queue[:0] = [(m.topic, m.data, m.qos, False) for m in queued]
        finally:
            if box is not None:
                box.held = False
                if box.queue:
                    self._wake(session.client_id or "", box)

    def _write_now(
        self, handler: BrokerProtocolHandler, session: Session, topic: str, data: bytes | bytearray, qos: int,
        retain: bool,
    ) -> bool:  # fmt: skip
        """The common case, an idle TCP connection: the PUBLISH goes out at the end of this loop turn
        (``_write_unsent``) instead of waking the connection's writer task (a task switch per
        delivery). Order is kept: nothing is queued and no batch is in hand, the writer task writes
        what is unsent first, and every other writer writes a packet with one call."""
        transport = amqtt_seam.tcp_transport(handler.writer)  # None: WebSocket, its writer task writes
        if transport is None or session.transitions.state != "connected":
            return False
        if transport.is_closing() or transport.get_write_buffer_size() > _DIRECT_WRITE_MAX:
            return False  # the writer task drains a slow reader
        packet = self._publish_bytes(session, topic, data, qos, retain)
        if packet is None:
            return True
        unsent = self._unsent.get(handler)
        if unsent is not None:
            unsent += packet
            if len(unsent) >= _UNSENT_FLUSH_BYTES:  # a long burst: let the subscriber start on it now
                del self._unsent[handler]
                transport.write(unsent)
            return True
        self._unsent[handler] = bytearray(packet)
        if not self._unsent_scheduled:
            self._unsent_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_unsent)
        return True

    def _write_unsent(self) -> None:
        """End of the loop turn: one write per connection for every delivery routed to it in this turn
        (the reader routes every packet already buffered before it yields, so a burst becomes one send)."""
        self._unsent_scheduled = False
        unsent, self._unsent = self._unsent, {}
        for handler, data in unsent.items():
            self._write_unsent_of(handler, data)

    def _write_unsent_of(self, handler: BrokerProtocolHandler, data: bytearray | None = None) -> None:
        if data is None:
            data = self._unsent.pop(handler, None)
        transport = amqtt_seam.tcp_transport(handler.writer)
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
        # a connection that went away keeps its QoS 1/2 deliveries in inflight_out: resent on reconnect

    @staticmethod
    def _publish_bytes(session: Session, topic: str, data: bytes | bytearray, qos: int, retain: bool) -> bytes | None:
        """A PUBLISH; a QoS 1 or 2 delivery enters ``inflight_out`` until its PUBACK or PUBCOMP
        (chatmq/broker/reader.py)."""
        if qos == QOS_0:
            return encode_publish(topic, data, QOS_0, None, retain)
        try:
            packet_id = session.next_packet_id
        except AMQTTError:
            log.warning("%s has 65535 unacknowledged deliveries; dropping one on %s", session.client_id, topic)
            return None
        session.inflight_out[packet_id] = OutgoingApplicationMessage(packet_id, topic, qos, data, retain)
        return encode_publish(topic, data, qos, packet_id, retain)

    def _sweep_outboxes(self) -> None:
        """Wake the writers of connections that closed, so they end instead of waiting forever."""
        for box in list(self._outboxes.values()):
            session = box.handler.session
            if session is None or session.transitions.state != "connected":
                box.wake.set()
        self._outbox_sweep = (
            asyncio.get_running_loop().call_later(_OUTBOX_SWEEP_S, self._sweep_outboxes) if self._outboxes else None
        )

    async def _pump(self, client_id: str, box: Outbox) -> None:
        try:
            while self._outboxes.get(client_id) is box:
                if not box.queue or box.held:
                    session = box.handler.session
                    if session is None or session.transitions.state != "connected":
                        break
                    box.wake.clear()
                    await box.wake.wait()
                    continue
                await self._flush(box)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery to %s failed", client_id)
        finally:
            if self._outboxes.get(client_id) is box:
                del self._outboxes[client_id]
            if box.queue:
                self._handover(box)

    async def _flush(self, box: Outbox) -> None:
        """Write everything queued for one connection as one batch, then drain once."""
        handler = box.handler
        session = handler.session
        writer = handler.writer
        if session is None or writer is None or session.transitions.state != "connected":
            self._requeue_offline(box)
            return
        batch, box.queue = box.queue, []
        box.overflowing = False
        box.busy = True
        try:
            await self._write_batch(box, session, batch)
        finally:
            box.busy = False

    async def _write_batch(
        self, box: Outbox, session: Session, batch: list[tuple[str, bytes | bytearray, int, bool]]
    ) -> None:
        handler = box.handler
        self._write_unsent_of(handler)  # deliveries written directly earlier in this turn go first
        chunks: list[bytes] = []
        for topic, data, qos, retain in batch:
            packet = self._publish_bytes(session, topic, data, qos, retain)
            if packet is not None:
                chunks.append(packet)
        await self._write(handler, chunks)

    async def _write(self, handler: BrokerProtocolHandler, chunks: list[bytes]) -> None:
        writer = handler.writer
        if not chunks or writer is None:
            return
        try:
            async with amqtt_seam.write_lock(handler):
                writer.write(b"".join(chunks))
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            await handler.handle_connection_closed()
        # (stock _send_packet re-armed a write-timeout timer per packet; a broker's does nothing)

    def _handover(self, box: Outbox) -> None:
        """A writer ended with deliveries queued: to the session's new connection, else offline."""
        session = box.handler.session
        if session is not None and session.transitions.state == "connected":
            pending, box.queue = box.queue, []
            for topic, data, qos, retain in pending:
                self.enqueue(session, topic, data, qos, retain)
        else:
            self._requeue_offline(box)

    def _requeue_offline(self, box: Outbox) -> None:
        """The connection went away with deliveries still queued: a persistent session keeps its QoS>0 ones."""
        session = box.handler.session
        pending, box.queue = box.queue, []
        if session is None or session.clean_session or session.is_anonymous:
            return
        for topic, data, qos, _retain in pending:
            if qos in (QOS_1, QOS_2):
                keep_offline(session, topic, data, qos)
