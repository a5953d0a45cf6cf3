"""Indexed routing and per-subscriber delivery for the amqtt broker: ``class ChatBroker(RoutingMixin, Broker)``.

Why: stock amqtt 0.12.1 matches every message against every filter (10,000 idle filters took relay
from ~6,000 to ~250 msg/s), spawns one task per delivery and one per plugin call, and iterates
its subscriptions dict across awaits, so a SUBSCRIBE during a broadcast can raise "dictionary
changed size during iteration". Here:

- ``SubscriptionIndex`` (a ``TopicTrie`` of filter -> {client_id: (session, qos)}) finds the
  recipients of a topic in O(depth + matches). amqtt's subscriptions dict becomes a read-only
  ``SubscriptionsView`` over it (amqtt's ``BrokerContext.subscriptions`` and plugins read it; its
  iteration is a snapshot, so awaiting inside a loop over it is safe).
- Overlapping subscriptions of one client deliver ONCE, at the highest granted QoS among that
  client's matching filters (MQTT 3.1.1 section 3.3.5 allows one copy per client or one per
  matching filter; a chat device wants each message once).
- A repeated SUBSCRIBE to the same filter replaces its QoS [MQTT-3.8.4-3] (stock kept the old one).
- The RECEIVE check runs per recipient per message (the access rules rely on it to cut removed
  members): a direct call of the broker's hooks (``_acl_check``), not a task per plugin.
- A delivery to an idle TCP connection is written to its transport at once (``_write_now``). Else
  the session gets an ``_Outbox``: a deque drained by ONE long-lived writer task per
  session (not one task per packet) that writes a batch of PUBLISH packets under the handler's
  write lock and drains once. Per-subscriber order is publish order; a slow subscriber delays
  only itself. QoS 1 deliveries are pipelined: the message goes to ``session.inflight_out`` and
  its PUBACK removes it there (chatmq/broker/reader.py; no future per delivery), instead of awaiting
  each PUBACK in turn.
  An unacknowledged QoS 1 delivery stays in ``inflight_out`` when the connection drops (stock
  dropped it after 5 s), so amqtt's ``_retry_deliveries`` resends it with DUP on reconnect.
- Offline persistent sessions (clean_session=0, not anonymous) get QoS>0 messages queued in
  ``session.retained_messages`` as stock amqtt did.

Hooks for subclasses (the broker core composes this mixin before ``Broker``):

- ``_deliver(session, broadcast, qos)``: every routed delivery after the RECEIVE check, whether the
  session is connected or not. ``broadcast`` is amqtt's dict (``session``, ``topic``, ``data``,
  optional ``qos``). Default: offline queueing as stock, else ``_enqueue``.
- ``_delivery_qos(broadcast, granted_qos) -> int``: the QoS of one delivery: a forced
  ``broadcast["qos"]``, else min(publish QoS, granted QoS) when ``broadcast["data"]`` has a ``qos``
  attribute (``chatmq.broker.connection.Published``), else the granted QoS (stock amqtt).
- ``_acl_check(session, access, topic) -> bool``: the hooks' access check (SUBSCRIBE, RECEIVE).
- ``_enqueue(session, topic, data, qos, retain=False)``: put one PUBLISH on a connected session's
  outbox (used for routed and retained messages alike, so their order is kept).
- ``_undelivered(session)``: QoS>0 deliveries queued in the outbox but not yet written (a
  shutdown that persists ``inflight_out`` and the offline queue should persist these too).
- ``_routing_index``: the ``SubscriptionIndex``; ``_outbox_limit``: queued deliveries per session
  above which QoS 0 deliveries are dropped (logged once per episode).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import OutgoingApplicationMessage, Session

from chatmq.broker import amqtt_seam
from chatmq.broker.topictrie import TopicTrie, filter_matches, has_wildcard, valid_filter
from chatmq.core.access import Action
from chatmq.core.mqtt.codec import SUBACK_FAILURE, encode_publish

if TYPE_CHECKING:
    from chatmq.broker.hooks import Hooks

log = logging.getLogger(__name__)

# How often writers of closed connections are woken so they can end (one timer, not one per writer).
_OUTBOX_SWEEP_S = 10.0
_UNSENT_FLUSH_BYTES = 8 * 1024
_DIRECT_WRITE_MAX = 64 * 1024  # above this many unsent bytes a connection's deliveries queue for its writer

Subscribers = dict[str, tuple[Session, int]]  # client_id -> (session, granted qos)
# Marks a QoS 1 delivery as written once (see _flush); amqtt only tests it for None.
_WRITTEN = PublishPacket.build("chatmq/written", b"", 1, False, QOS_1, False)


_QUEUED_BYTES_KEY = "chatmq.queued_bytes"  # payload bytes in a session's offline queue


def queued_bytes(session: Session) -> int:
    return int(session.attributes.get(_QUEUED_BYTES_KEY, 0))


def count_queued(session: Session, delta: int) -> None:
    """Keep the payload bytes of a session's offline queue (``session.retained_messages``) up to date."""
    session.attributes[_QUEUED_BYTES_KEY] = queued_bytes(session) + delta


class SubscriptionIndex:
    """Filters and their subscribers, indexed for routing and for per-client removal."""

    def __init__(self) -> None:
        self._trie: TopicTrie[Subscribers] = TopicTrie()
        self._by_client: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._trie)

    def add(self, topic_filter: str, session: Session, qos: int) -> None:
        subscribers = self._trie.get(topic_filter)
        if subscribers is None:
            subscribers = {}
            self._trie.insert(topic_filter, subscribers)
        client_id = session.client_id or ""
        subscribers[client_id] = (session, qos)
        self._by_client.setdefault(client_id, set()).add(topic_filter)

    def remove(self, topic_filter: str, client_id: str) -> bool:
        subscribers = self._trie.get(topic_filter)
        if subscribers is None or subscribers.pop(client_id, None) is None:
            return False
        if not subscribers:
            self._trie.remove(topic_filter)
        own = self._by_client.get(client_id)
        if own is not None:
            own.discard(topic_filter)
            if not own:
                del self._by_client[client_id]
        return True

    def remove_client(self, client_id: str) -> list[str]:
        """Every filter of one client, in O(its own filters)."""
        filters = list(self._by_client.get(client_id, ()))
        for topic_filter in filters:
            self.remove(topic_filter, client_id)
        return filters

    def filters_of(self, client_id: str) -> set[str]:
        return set(self._by_client.get(client_id, ()))

    def subscribers(self, topic_filter: str) -> Subscribers | None:
        return self._trie.get(topic_filter)

    def filters(self) -> list[str]:
        return self._trie.filters()

    def clear(self) -> None:
        self._trie.clear()
        self._by_client.clear()

    def route(self, topic: str) -> list[tuple[Session, int]]:
        """One (session, qos) per client subscribed to a matching filter, at its highest granted QoS.

        A new list: the caller may await per recipient while subscriptions change.
        """
        matched = self._trie.match(topic)
        first = next(matched, None)
        if first is None:
            return []
        second = next(matched, None)
        if second is None:  # the common case: one filter matches, no merging needed
            return list(first.values())
        best: dict[str, tuple[Session, int]] = dict(first)
        for subscribers in (second, *matched):
            for client_id, entry in subscribers.items():
                known = best.get(client_id)
                if known is None or entry[1] > known[1]:
                    best[client_id] = entry
        return list(best.values())


class SubscriptionsView(Mapping[str, list[tuple[Session, int]]]):
    """amqtt's ``dict[filter, list[(session, qos)]]`` shape, read-only, over the index.

    Iteration walks a snapshot of the filters, so code that awaits inside ``for f in
    broker.subscriptions`` (stock ``_handle_client_session`` does) cannot crash when a client
    subscribes meanwhile. ``clear()`` exists because ``Broker.start()`` calls it.
    """

    def __init__(self, index: SubscriptionIndex) -> None:
        self._index = index

    def __getitem__(self, topic_filter: str) -> list[tuple[Session, int]]:
        subscribers = self._index.subscribers(topic_filter)
        if subscribers is None:
            raise KeyError(topic_filter)
        return list(subscribers.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.filters())

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"SubscriptionsView({len(self)} filters)"

    def clear(self) -> None:
        self._index.clear()


class _Outbox:
    """The deliveries waiting for one connection, and the single task that writes them."""

    __slots__ = ("busy", "handler", "held", "overflowing", "queue", "task", "wake")

    def __init__(self, handler: BrokerProtocolHandler) -> None:
        self.handler = handler
        self.queue: deque[tuple[str, bytes | bytearray, int, bool]] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.overflowing = False
        self.busy = False  # the writer task holds a batch not fully written yet
        self.held = False  # a reconnect's replay goes first: deliveries wait in the queue meanwhile


class RoutingMixin:
    """Replaces amqtt's linear routing and per-delivery tasks; see the module docstring.

    Must come before ``amqtt.broker.Broker`` in the bases.
    """

    _outbox_limit: int = 100_000
    hooks: Hooks  # set by the broker core
    _unsent_scheduled: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routing_index = SubscriptionIndex()
        amqtt_seam.use_subscriptions(self, SubscriptionsView(self._routing_index))  # type: ignore[arg-type]
        self._outboxes: dict[str, _Outbox] = {}
        self._unsent: dict[BrokerProtocolHandler, bytearray] = {}  # direct deliveries of this loop turn
        self._outbox_sweep: asyncio.TimerHandle | None = None

    # ---- subscriptions -------------------------------------------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        if not valid_filter(topic_filter):
            return SUBACK_FAILURE
        if not await self._acl_check(session, Action.SUBSCRIBE, topic_filter):
            return SUBACK_FAILURE
        max_qos = self.config.get("max-qos", qos)  # type: ignore[attr-defined]
        if isinstance(max_qos, int):
            qos = min(qos, max_qos)
        self._routing_index.add(topic_filter, session, qos)
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        return int(self._routing_index.remove(a_filter, session.client_id or ""))

    async def _del_all_subscriptions(self, session: Session) -> None:
        self._routing_index.remove_client(session.client_id or "")

    # ---- routing -------------------------------------------------------------------------

    async def _broadcast_loop(self) -> None:
        """amqtt starts this task and awaits it at shutdown. Nothing is queued for it any more
        (``_broadcast_message`` routes in the caller's task), so it only waits for shutdown."""
        await amqtt_seam.broadcast_shutdown(self)  # type: ignore[arg-type]

    async def _broadcast_message(
        self, session: Session | None, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None
    ) -> bool:
        """Route now, in the caller's task (stock queued every message for a shared broadcast loop).
        Per-publisher order is then the order the reader saw; when this returns, every matching
        subscriber has the message in its outbox or offline queue, so a PUBACK sent afterwards
        promises delivery; and one fast publisher cannot grow a shared backlog without bound.
        False when a subscriber that must not drop refused it (or routing failed): the publisher then
        gets no PUBACK and resends."""
        broadcast: dict[str, Any] = {"session": session, "topic": topic, "data": data}
        if force_qos is not None:
            broadcast["qos"] = force_qos
        try:
            return await self._route(broadcast)
        except Exception:
            log.exception("routing failed for topic %r", topic)
            return False

    async def _route(self, broadcast: dict[str, Any]) -> bool:
        """Every allowed subscriber gets the message; False if one of them refused it."""
        topic = broadcast["topic"]
        taken = True
        for session, granted in self._routing_index.route(topic):
            if not await self._acl_check(session, Action.RECEIVE, topic):
                log.info("%s not allowed to receive messages from topic %s", session.client_id, topic)
                continue
            taken = await self._deliver(session, broadcast, self._delivery_qos(broadcast, granted)) and taken
        return taken

    def _delivery_qos(self, broadcast: dict[str, Any], granted_qos: int) -> int:
        """A forced QoS (amqtt's ``broadcast["qos"]``) wins; else min(publish QoS, granted QoS)
        when the payload carries its publish QoS as a ``qos`` attribute (chatmq.broker.connection.Published),
        else the granted QoS as stock amqtt does."""
        forced = broadcast.get("qos")
        if forced is not None:
            return int(forced)
        published = getattr(broadcast["data"], "qos", None)
        return granted_qos if published is None else min(int(published), granted_qos)

    async def _acl_check(self, session: Session, access: Action, topic: str) -> bool:
        """The hooks decide (chatmq/broker/hooks: chatmq.core.access.authorize); a hook that fails denies."""
        try:
            return await self.hooks.acl_check(session, access, topic)
        except Exception:
            log.exception("access check failed; %s on %r denied", access.value, topic)
            return False

    async def _deliver(self, session: Session, broadcast: dict[str, Any], qos: int) -> bool:
        """False when the session refused the message (a full queue that must not drop)."""
        if session.transitions.state != "connected":
            # Stock behaviour [MQTT 3.1.2.4]: queue QoS>0 for a persistent, non-anonymous session.
            if not session.clean_session and qos in (QOS_1, QOS_2) and not session.is_anonymous:
                return bool(await self._retain_broadcast_message(broadcast, qos, session))  # type: ignore[attr-defined]
            return True
        self._enqueue(session, broadcast["topic"], broadcast["data"], qos)
        return True

    # ---- delivery ------------------------------------------------------------------------

    def _undelivered(self, session: Session) -> list[tuple[str, bytes | bytearray, int]]:
        """QoS>0 deliveries still waiting in a session's outbox (not written yet, so not in
        ``inflight_out``): what a shutdown must persist besides ``inflight_out`` and the offline queue."""
        box = self._outboxes.get(session.client_id or "")
        if box is None:
            return []
        return [(topic, data, qos) for topic, data, qos, _retain in box.queue if qos in (QOS_1, QOS_2)]

    async def _shutdown_broadcast_loop(self) -> None:
        """After routing stops, let every outbox writer finish (sessions are closed by then: each
        hands its QoS>0 leftovers to the offline queue) so no writer task outlives the broker."""
        await super()._shutdown_broadcast_loop()  # type: ignore[misc]
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

    def _enqueue(self, session: Session, topic: str, data: bytes | bytearray, qos: int, retain: bool = False) -> None:
        sessions: dict[str, tuple[Session, BrokerProtocolHandler]] = self.sessions  # type: ignore[attr-defined]
        handler = sessions.get(session.client_id or "", (None, None))[1]
        if handler is None:
            return
        client_id = session.client_id or ""
        box = self._outboxes.get(client_id)
        if box is not None and box.handler is not handler:
            box.wake.set()  # the old connection's writer sees the handler change and ends
            box = None
        idle = box is None or (not box.queue and not box.busy and not box.held)
        if idle and qos != QOS_2 and self._write_now(handler, session, topic, data, qos, retain):
            return
        if box is None:
            box = self._outboxes[client_id] = _Outbox(handler)
        if qos == QOS_0 and len(box.queue) >= self._outbox_limit:
            if not box.overflowing:
                log.warning("outbox of %s is full (%d); dropping QoS 0 deliveries", client_id, len(box.queue))
                box.overflowing = True
            return
        box.queue.append((topic, data, qos, retain))
        self._wake(client_id, box)

    def _wake(self, client_id: str, box: _Outbox) -> None:
        """Start the connection's writer task if it has none, and wake it."""
        if box.task is None:
            box.task = asyncio.create_task(self._pump(client_id, box), name=f"outbox:{client_id}")
            if self._outbox_sweep is None:
                self._outbox_sweep = asyncio.get_running_loop().call_later(_OUTBOX_SWEEP_S, self._sweep_outboxes)
        box.wake.set()

    def _hold_deliveries(self, session: Session, handler: BrokerProtocolHandler) -> None:
        """A (re)connecting session: deliveries routed from now on wait in its outbox until
        ``_replay`` has written what the session was owed before, so nothing overtakes it."""
        client_id = session.client_id or ""
        old = self._outboxes.get(client_id)
        if old is not None and old.handler is not handler:
            old.wake.set()  # the previous connection's writer sees the handler change and ends
            old = None
        box = old or _Outbox(handler)
        box.held = True
        self._outboxes[client_id] = box

    async def _replay(
        self, session: Session, handler: BrokerProtocolHandler, queued: list[tuple[str, bytes | bytearray, int]]
    ) -> None:
        """What a reconnecting session is owed, oldest first, then release the held deliveries:
        deliveries written to an earlier connection and never acknowledged, again with DUP set
        [MQTT-4.4.0-1] (QoS 1 pipelined: the PUBACK removes them from ``inflight_out``), then the
        messages queued while it was offline (at their QoS, retain off [MQTT-3.3.1-9])."""
        box = self._outboxes.get(session.client_id or "")
        try:
            chunks: list[bytes] = []
            for packet_id, message in sorted(session.inflight_out.items()):
                if message.qos == QOS_1:
                    chunks.append(encode_publish(message.topic, message.data, QOS_1, packet_id,
                                                 bool(message.retain), dup=True))  # fmt: skip
                else:  # QoS 2 keeps amqtt's handshake (PUBREL again if PUBREC came, else the PUBLISH)
                    self._track(amqtt_seam.message_flow(handler, message), session, message.topic)
            await self._write(handler, chunks)
            if box is not None and box.handler is handler:
                box.queue.extendleft((topic, data, qos, False) for topic, data, qos in reversed(queued))
        finally:
            if box is not None:
                box.held = False
                if box.queue:
                    self._wake(session.client_id or "", box)

    def _track(self, flow: Any, session: Session, topic: str) -> None:
        """A QoS 2 handshake runs as its own task: its failure (a timeout, a closed connection) is
        logged here, never left as an unretrieved task exception."""
        task = asyncio.ensure_future(flow)

        def done(finished: asyncio.Future[Any]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                log.info("QoS 2 delivery to %s on %s not completed: %r", session.client_id, topic,
                         finished.exception())  # fmt: skip

        task.add_done_callback(done)

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
        # a connection that went away keeps its QoS 1 deliveries in inflight_out: resent on reconnect

    @staticmethod
    def _publish_bytes(session: Session, topic: str, data: bytes | bytearray, qos: int, retain: bool) -> bytes | None:
        """A QoS 0/1 PUBLISH; a QoS 1 delivery enters ``inflight_out`` until its PUBACK (chatmq/broker/reader.py)."""
        if qos == QOS_0:
            return encode_publish(topic, data, QOS_0, None, retain)
        try:
            packet_id = session.next_packet_id
        except AMQTTError:
            log.warning("%s has 65535 unacknowledged deliveries; dropping one on %s", session.client_id, topic)
            return None
        message = OutgoingApplicationMessage(packet_id, topic, QOS_1, data, retain)
        # amqtt's redelivery on reconnect resends with DUP when publish_packet is set; it builds
        # the packet itself, so a shared marker saves building one per delivery
        message.publish_packet = _WRITTEN
        session.inflight_out[packet_id] = message
        return encode_publish(topic, data, QOS_1, packet_id, retain)

    def _sweep_outboxes(self) -> None:
        """Wake the writers of connections that closed, so they end instead of waiting forever."""
        for box in list(self._outboxes.values()):
            session = box.handler.session
            if session is None or session.transitions.state != "connected":
                box.wake.set()
        self._outbox_sweep = (
            asyncio.get_running_loop().call_later(_OUTBOX_SWEEP_S, self._sweep_outboxes) if self._outboxes else None
        )

    async def _pump(self, client_id: str, box: _Outbox) -> None:
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

    async def _flush(self, box: _Outbox) -> None:
        """Write everything queued for one connection as one batch, then drain once."""
        handler = box.handler
        session = handler.session
        writer = handler.writer
        if session is None or writer is None or session.transitions.state != "connected":
            self._requeue_offline(box)
            return
        batch, box.queue = box.queue, deque()
        box.overflowing = False
        box.busy = True
        try:
            await self._write_batch(box, session, batch)
        finally:
            box.busy = False

    async def _write_batch(
        self, box: _Outbox, session: Session, batch: deque[tuple[str, bytes | bytearray, int, bool]]
    ) -> None:
        handler = box.handler
        self._write_unsent_of(handler)  # deliveries written directly earlier in this turn go first
        chunks: list[bytes] = []
        for topic, data, qos, retain in batch:
            if qos in (QOS_0, QOS_1):
                packet = self._publish_bytes(session, topic, data, qos, retain)
                if packet is not None:
                    chunks.append(packet)
            else:  # QoS 2 is rare: keep order by writing what came before, then run amqtt's full flow
                await self._write(handler, chunks)
                chunks = []
                try:
                    await handler.mqtt_publish(topic, data, qos, retain=retain)
                except Exception as error:  # the flow's own timeouts and closed connections
                    log.info("QoS 2 delivery to %s on %s failed: %r", session.client_id, topic, error)
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

    def _handover(self, box: _Outbox) -> None:
        """A writer ended with deliveries queued: to the session's new connection, else offline."""
        session = box.handler.session
        if session is not None and session.transitions.state == "connected":
            pending, box.queue = box.queue, deque()
            for topic, data, qos, retain in pending:
                self._enqueue(session, topic, data, qos, retain)
        else:
            self._requeue_offline(box)

    def _requeue_offline(self, box: _Outbox) -> None:
        """The connection went away with deliveries still queued: a persistent session keeps its QoS>0 ones."""
        session = box.handler.session
        pending, box.queue = box.queue, deque()
        if session is None or session.clean_session or session.is_anonymous:
            return
        for topic, data, qos, _retain in pending:
            if qos in (QOS_1, QOS_2):
                session.retained_messages.put_nowait(RetainedApplicationMessage(None, topic, data, qos))
                count_queued(session, len(data))

    # ---- retained messages -----------------------------------------------------------------

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Retained messages for one new subscription, after the RECEIVE check, in the session's outbox."""
        topic_filter, qos = subscription
        retained: Mapping[str, RetainedApplicationMessage] = self.retained_messages  # type: ignore[attr-defined]
        if has_wildcard(topic_filter):
            topics = [topic for topic in list(retained) if filter_matches(topic, topic_filter)]
        else:
            topics = [topic_filter] if topic_filter in retained else []
        for topic in topics:
            message = retained.get(topic)
            if message is None or not await self._acl_check(session, Action.RECEIVE, topic):
                continue
            self._enqueue(session, topic, message.data, min(qos, message.qos or qos), retain=True)


def routing_index(broker: object) -> SubscriptionIndex:
    """The index of a broker built with RoutingMixin (for tests and diagnostics)."""
    index = getattr(broker, "_routing_index", None)
    if not isinstance(index, SubscriptionIndex):
        raise TypeError(f"{type(broker).__name__} does not use RoutingMixin")
    return index
