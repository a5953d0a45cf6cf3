"""ChatBroker: chatmq's broker, plain objects composed; amqtt hosts it through the seam.

``build_broker`` makes the amqtt broker that serves (``amqtt_seam.AmqttBroker``) around a
``ChatBroker``, which owns what amqtt 0.12 got wrong and what chatmq adds:

- connections: CONNECT through chatmq's codec (chatmq/broker/connection.py), login and will check
  through the hooks before any existing session is touched, take-over, the per-user session cap;
- the packets after CONNECT: ``PacketReader`` (chatmq/broker/reader.py) hands each PUBLISH,
  SUBSCRIBE and UNSUBSCRIBE to this class (``publish_from``, ``subscribe_from``, ``unsubscribe_from``);
- ``router`` (chatmq/broker/routing.py): subscriptions, access checks, retained messages, routing;
- ``deliveries`` (chatmq/broker/deliveries.py): the connected sessions' outboxes;
- ``offline`` (chatmq/broker/offline.py): offline queues, kept with the sessions in ``session_store``;
- ``hooks`` (chatmq/broker/hooks): authentication, access, control, disconnect events;
- ``counters`` (chatmq/broker/ops.py) and the ``BrokerView`` the hooks see.

A PUBLISH from bytes to every subscriber's socket: ``PacketReader.run`` -> ``ChatBroker.publish_from``
-> ``Router.route`` -> ``Deliveries.enqueue`` (``_write_now``: the subscriber's transport, or its
outbox's writer task) or ``OfflineQueues.put``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from chatmq.broker import metrics
from chatmq.broker.amqtt_seam import AmqttBroker, AmqttConnection, AmqttSession
from chatmq.broker.connection import KEEPALIVE_GRACE, read_connect
from chatmq.broker.deliveries import Deliveries
from chatmq.broker.hooks import HOOKS_VERSION, Hooks
from chatmq.broker.hooks.control import CONTROL_TOPICS, Control
from chatmq.broker.offline import OfflineQueues
from chatmq.broker.ops import Counters, Totals
from chatmq.broker.reader import PacketReader
from chatmq.broker.routing import Router, SubscriptionsView
from chatmq.broker.services import CONNECTED_AT_KEY, restore_owner, session_identity, session_owner
from chatmq.broker.session import SmallEvent
from chatmq.broker.session_store import QueuedMessage, SessionStore
from chatmq.core.access import Action
from chatmq.core.mqtt.codec import (
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    Connack,
    PacketTooLarge,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from chatmq.core.protocol import PayloadError, parse_typing
from chatmq.core.ratelimit import LocalRate

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # a socket that never sends CONNECT must not hold a connection slot
LISTEN_BACKLOG = 4096  # pending connections the kernel keeps (capped by net.core.somaxconn)
TAKEOVER_TIMEOUT_S = 5.0
_SUBSCRIPTIONS_KEY = "chatmq.subscriptions"  # filter -> granted QoS, what a persistent session keeps
_LOOP_DONE_KEY = "chatmq.loop_done"


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    max_packet_bytes: int = 64 * 1024
    session_queue_limit: int = 1000  # messages queued per offline device session
    session_queue_bytes: int = 4 * 1024 * 1024  # and their payload bytes
    # The bridge's session (the service identity) has no message count limit: every send it has not
    # stored yet waits for it. Past this many bytes the broker stops acknowledging new sends to it.
    service_queue_bytes: int = 512 * 1024 * 1024
    typing_per_s: float = 2.0  # typing indicators relayed per user (0 = no limit)
    typing_burst: int = 10
    # Sessions one user may hold on this broker: live connections plus persistent sessions kept
    # offline (each bounded above, so this bounds what one account costs). 0 = no limit.
    sessions_per_user: int = 32


def build_broker(
    config: dict[str, Any],
    *,
    hooks: Hooks,
    limits: BrokerLimits | None = None,
    sessions: SessionStore | None = None,
    ws_permessage_deflate: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> AmqttBroker:
    """The broker that serves: amqtt's listeners around a ``ChatBroker``."""
    core = ChatBroker(hooks=hooks, limits=limits, sessions=sessions, ws_permessage_deflate=ws_permessage_deflate)
    return AmqttBroker(config, core, loop=loop)


def _persistent(session: Session) -> bool:
    return not session.clean_session


def _is_device(session: Session) -> bool:
    """Logged in as a chat user (not the bridge's service identity, not anonymous)."""
    identity = session_identity(session.attributes)
    return identity is not None and not identity.is_service


class ChatBroker:
    """See the module docstring. Also the ``BrokerView`` the hooks see (chatmq/broker/hooks)."""

    def __init__(
        self,
        *,
        hooks: Hooks,
        limits: BrokerLimits | None = None,
        sessions: SessionStore | None = None,
        ws_permessage_deflate: bool = False,
    ) -> None:
        if hooks.version != HOOKS_VERSION:
            raise ValueError(f"hooks of version {hooks.version}; this broker calls version {HOOKS_VERSION}")
        self.hooks = hooks
        self.limits = limits or BrokerLimits()
        self.ws_permessage_deflate = ws_permessage_deflate  # Settings.ws_permessage_deflate
        self.session_store = sessions
        self.counters = Counters()
        self.sessions: dict[str, tuple[Session, AmqttConnection]] = {}  # amqtt's, from attach()
        self.offline = OfflineQueues(self.limits, sessions)
        self.deliveries = Deliveries(self.sessions)
        self.router = Router(hooks, self.counters, self.deliveries, self.offline)
        self._typing_rate = LocalRate(self.limits.typing_per_s, self.limits.typing_burst)
        self._user_sessions: dict[str, set[str]] = {}  # user -> client ids (pruned as it is read)
        self._stopping = False
        self._host: AmqttBroker | None = None

    def attach(self, host: AmqttBroker) -> SubscriptionsView:
        """The amqtt broker that serves this one: its sessions dict and configuration."""
        self._host = host
        self.sessions = self.deliveries.sessions = host.sessions  # type: ignore[assignment]
        max_qos = host.config.get("max-qos") if "max-qos" in host.config else None
        self.router.max_qos = max_qos if isinstance(max_qos, int) else None
        metrics.track(self)
        return SubscriptionsView(self.router.index)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def started(self) -> None:
        await self.hooks.start(self)

    async def stopping(self) -> None:
        """Before amqtt shuts down: the hooks stop; what persistent sessions still owe their clients
        (unacknowledged in-flight, outbox, offline queue) is written back; amqtt's session cleanup
        then keeps the stored sessions."""
        try:
            await self.hooks.stop()
        finally:
            self._stopping = True
            if self.session_store is not None:
                for session, _handler in list(self.sessions.values()):
                    if _persistent(session):
                        owed = [QueuedMessage(m.topic, bytes(m.data), m.qos or 1)
                                for m in session.inflight_out.values()]  # fmt: skip
                        owed += [QueuedMessage(t, bytes(d), q) for t, d, q in self.deliveries.undelivered(session)]
                        await self.offline.persist(session, owed)

    async def stopped(self) -> None:
        self.router.retained.clear()
        if self.session_store is not None:
            await self.session_store.close()

    async def close_deliveries(self) -> None:
        await self.deliveries.close()

    async def listen(
        self, kind: ListenerType, accept: Callable[..., Any], address: str | None, port: int, ssl_context: Any
    ) -> Any:
        """amqtt 0.12 defect: the websockets library's own 1 MiB message limit closes the connection
        (and loses the message) before amqtt sees it; size it from our limit so the codec's limit,
        shared with TCP, decides (chatmq/broker/reader.py reads through it).

        amqtt 0.12 defect: both listeners had asyncio's default listen backlog (100). When every
        device reconnects after a restart, the kernel drops the SYNs beyond it and the clients' TCP
        retransmits (after 1, 3, 7, 15 s...) stretched a 2,000-device storm to 40 s."""
        if kind == ListenerType.TCP:
            return await asyncio.start_server(accept, address, port, reuse_address=True, ssl=ssl_context,
                                              backlog=LISTEN_BACKLOG)  # fmt: skip
        return await websockets.serve(
            accept,
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            # permessage-deflate only when configured: docs/benchmarks.md, "WebSocket compression"
            compression="deflate" if self.ws_permessage_deflate else None,
            max_size=max(self.limits.max_packet_bytes + 16, 1 << 20),
            backlog=LISTEN_BACKLOG,
        )

    # ---- connection set-up -------------------------------------------------------------------

    async def accept(
        self, reader: ReaderAdapter, writer: WriterAdapter, where: str
    ) -> tuple[AmqttConnection, AmqttSession]:
        try:
            return await self._accept(reader, writer, where)
        except MQTTError:
            self.counters.login_refused()
            raise

    async def _accept(
        self, reader: ReaderAdapter, writer: WriterAdapter, where: str
    ) -> tuple[AmqttConnection, AmqttSession]:
        """amqtt 0.12 defect: a CONNECT reusing a live client id kicked the victim, reported its
        session-present flag and (clean session) deleted its subscriptions BEFORE authentication,
        and every failed login left a session behind. Here authentication comes first and a refused
        CONNECT touches no existing state."""
        try:
            incoming = await asyncio.wait_for(read_connect(reader, writer, self.limits.max_packet_bytes),
                                              CONNECT_TIMEOUT_S)  # fmt: skip
        except PacketTooLarge as exc:
            log.warning("closing connection from %s: packet of %d bytes exceeds max_packet_bytes=%d", where, exc.size,
                        exc.limit)  # fmt: skip
            await writer.close()
            raise MQTTError(f"no valid CONNECT from {where}: {exc!r}") from exc
        except TimeoutError as exc:
            await writer.close()
            raise MQTTError(f"no valid CONNECT from {where}: {exc!r}") from exc
        except MQTTError:
            await writer.close()
            raise
        except NoDataError as exc:
            raise AMQTTError(exc) from exc

        if not await self._login(incoming, where):
            await self._refuse(writer, CONNACK_NOT_AUTHORIZED)
            raise MQTTError(f"login refused for client_id={incoming.client_id!r} from {where}")
        if _is_device(incoming):
            incoming.will_retain = False  # a device's will is its offline notice: never kept (see publish_from)

        if not incoming.client_id:
            incoming.client_id = gen_client_id()  # MQTT-3.1.3-6 (amqtt refused it with clean_session=0)
        existing = self.sessions.get(incoming.client_id, (None, None))[0]
        if existing is not None and session_owner(existing.attributes) != session_owner(incoming.attributes):
            # A client id is not a credential: another user's login must not take over a session.
            log.warning("refused client_id=%r from %s: the session belongs to another user", incoming.client_id, where)
            await self._refuse(writer, CONNACK_IDENTIFIER_REJECTED)
            raise MQTTError(f"client id {incoming.client_id!r} belongs to another user")
        if existing is None and not self._admit_session(incoming):
            # No await between this check and the session's registration: concurrent CONNECTs of one
            # user cannot both take the last place.
            log.warning("refused client_id=%r user=%r from %s: %d sessions held already (CHATMQ_SESSIONS_PER_USER)",
                        incoming.client_id, incoming.username, where, self.limits.sessions_per_user)  # fmt: skip
            await self._refuse(writer, CONNACK_NOT_AUTHORIZED)
            raise MQTTError(f"user {incoming.username!r} holds {self.limits.sessions_per_user} sessions already")

        if existing is not None:
            await self._take_over(existing)
        if incoming.clean_session or existing is None:
            if existing is not None:
                await self._end_session(existing)
            session = incoming
            session.parent = 0
        else:
            assert isinstance(existing, AmqttSession)
            for field in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive"):
                setattr(existing, field, getattr(incoming, field))
            existing.username, existing.password = incoming.username, incoming.password
            existing.remote_address, existing.remote_port = incoming.remote_address, incoming.remote_port
            existing.clean_session = False
            restore_owner(existing.attributes, session_owner(incoming.attributes))
            session = existing
            session.parent = 1
        # amqtt 0.12 defect: the reader's timeout is the bare keepalive and expiry is ignored; the
        # reader now disconnects on it, after the 1.5x grace of MQTT-3.1.2-24.
        session.keep_alive = incoming.keep_alive * KEEPALIVE_GRACE if incoming.keep_alive > 0 else 0
        return self._connection(), session

    def _connection(self) -> AmqttConnection:
        assert self._host is not None
        return AmqttConnection(self._host.plugins_manager)

    async def _login(self, session: Session, where: str) -> bool:
        """The hooks let the client in (``authenticate``), and let it leave its will (``acl_check``
        of WILL: amqtt would publish a will without any check)."""
        try:
            if not await self.hooks.authenticate(session):
                return False
        except Exception:
            log.exception("refused login (authentication error): client_id=%r from %s", session.client_id, where)
            return False
        if session.will_flag and not await self.router.allowed(session, Action.WILL, session.will_topic or ""):
            log.warning("refused login (will topic %r not allowed): client_id=%r user=%r from %s",
                        session.will_topic, session.client_id, session.username, where)  # fmt: skip
            return False
        return True

    @staticmethod
    async def _refuse(writer: WriterAdapter, code: int) -> None:
        with contextlib.suppress(Exception):
            writer.write(Connack(code).encode())
            await writer.drain()
        with contextlib.suppress(Exception):
            await writer.close()

    async def _take_over(self, existing: Session) -> None:
        """Close the live connection of a session (MQTT-3.1.4-2) and wait until its message loop has
        finished, so the old loop cannot mark the new connection disconnected."""
        if not existing.transitions.is_connected():
            return
        log.info("client_id=%r reconnected: closing its previous connection", existing.client_id)
        old_handler = self.sessions[existing.client_id][1]  # type: ignore[index]
        await old_handler.handle_connection_closed()
        done: SmallEvent | None = existing.attributes.get(_LOOP_DONE_KEY)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TAKEOVER_TIMEOUT_S)

    async def _end_session(self, session: Session) -> None:
        """A clean-session CONNECT ends the session its client id held (and its stored copy)."""
        self.sessions.pop(session.client_id or "", None)
        self.router.remove_client(session)
        session.clear_queues()
        await self._forget(session.client_id or "")

    def _admit_session(self, session: Session) -> bool:
        """A new client id of a device: within its user's ``sessions_per_user`` (then counted), or not.
        A client id the broker holds already (a reconnect, a take-over) never gets here."""
        identity = session_identity(session.attributes)
        if identity is None or identity.is_service or session.client_id is None:
            return True
        if self.limits.sessions_per_user and self.sessions_of(identity.user) >= self.limits.sessions_per_user:
            return False
        self._user_sessions.setdefault(identity.user, set()).add(session.client_id)
        return True

    def sessions_of(self, user: str) -> int:
        """Sessions this broker holds for ``user``: connected ones and persistent ones kept offline."""
        held = self._user_sessions.get(user)
        if not held:
            return 0
        for client_id in list(held):
            session = self.sessions.get(client_id, (None, None))[0]
            identity = session_identity(session.attributes) if session is not None else None
            if session is None or identity is None or identity.user != user \
                    or not (session.transitions.is_connected() or _persistent(session)):  # fmt: skip
                held.discard(client_id)
        if not held:
            del self._user_sessions[user]
        return len(held)

    def offline_session(self, client_id: str) -> tuple[AmqttConnection, AmqttSession]:
        session = AmqttSession()
        session.client_id = client_id
        session.clean_session = False
        session.transitions.disconnect()
        return self._connection(), session

    async def open_connection(
        self, session: Session, handler: AmqttConnection, reader: ReaderAdapter, writer: WriterAdapter
    ) -> SmallEvent:
        """A connection's start after its CONNECT was accepted; amqtt's message loop runs after it, and
        whoever runs it sets the event returned once the loop ended (a take-over of the session waits
        for it, ``_take_over``). A plain coroutine, not a context manager: an async generator and its
        context manager kept for each connection's life were ~0.6 KiB each.

        amqtt 0.12 defect: after CONNACK amqtt pushed the retained messages of every filter any
        client held, at QoS 0 and without the RECEIVE check; retained messages are now only sent
        for a client's own new subscription (``subscribe_from``)."""
        self.counters.connected()
        session.attributes[CONNECTED_AT_KEY] = int(time.time() * 1000)
        if session.transitions.is_connected():  # the previous connection's loop did not end in time
            session.transitions.disconnect()
        session.transitions.connect()
        handler.attach(session, reader, writer)
        handler.packets = PacketReader(handler, self, self.limits.max_packet_bytes)
        assert session.client_id is not None
        self.sessions[session.client_id] = (session, handler)
        self.deliveries.hold(session, handler)  # what it is owed goes out before them
        done = SmallEvent()
        session.attributes[_LOOP_DONE_KEY] = done
        try:
            await self._send(handler, Connack(0, bool(session.parent)).encode())
            await self._save_session(session)
            await handler.start()
            await self.deliveries.replay(session, handler, await self.offline.take(session))
        except BaseException:
            done.set()
            raise
        return done

    @staticmethod
    async def _send(handler: AmqttConnection, packet: bytes) -> None:
        await handler.packets.send(packet)

    # ---- packets from clients ---------------------------------------------------------------

    async def publish_from(self, session: Session, handler: AmqttConnection, message: ApplicationMessage) -> bool:
        """Route one client publish (QoS 2: once released); False only when it was not taken and must
        not be acknowledged. (amqtt 0.12 defect: a publish to a ``$`` topic ended the message loop
        but left the socket open, a zombie that never answers again: it is dropped here.)"""
        self.counters.totals.received += 1
        topic = message.topic  # never empty nor a wildcard: the codec refused such a PUBLISH [MQTT-3.3.2-2]
        if topic.startswith(CONTROL_TOPICS):
            verdict = await self.hooks.control(session, topic, bytes(message.data or b""))
            if verdict is Control.HANDLED:
                return True
            if verdict is Control.REFUSED:
                await handler.handle_connection_closed()
                return False
        if topic.startswith("$"):
            log.info("client_id=%r published to %r: '$' topics are reserved, dropped", session.client_id, topic)
            self.counters.rejected("reserved_topic")
            return True
        if not await self.router.allowed(session, Action.PUBLISH, topic):
            log.info("client_id=%r may not publish to %r: dropped", session.client_id, topic)
            return True
        retain = message.retain
        if _is_device(session):
            # A device publishes only chat topics and its device presence: events, never state. A
            # retained one would be replayed to every new subscriber (stale typing, a send stored
            # again by a restarted bridge) and held by the broker for ever: relayed, never retained.
            retain = False
            if topic.startswith("chat/") and not self._typing_passes(session, topic, message.data):
                return True
        data = message.data or b""
        taken = await self.router.route(topic, data, message.qos or 0)
        if taken and retain:
            self.router.retained.set(topic, data, message.qos or 0)
        return taken

    def _typing_passes(self, session: Session, topic: str, data: bytes | bytearray | None) -> bool:
        """Typing indicators go from device to device through the broker alone, so the broker
        checks them as the bridge checks sends: ``{"typing": bool}``, strictly, at most
        MAX_TYPING_BYTES, and at most ``typing_per_s`` per user. Anything else is dropped (not
        relayed; typing is QoS 0 and has no answer), counted as rejected."""
        levels = topic.split("/")
        if len(levels) != 4 or levels[2] != "typing":
            return True
        try:
            parse_typing(bytes(data or b""))
        except PayloadError as error:
            log.debug("client_id=%r: typing on %r dropped (%s)", session.client_id, topic, error.message)
            self.counters.rejected("typing_invalid")
            return False
        if not self._typing_rate.allow(levels[3]):
            self.counters.rejected("typing_rate_limited")
            return False
        return True

    async def subscribe_from(self, session: Session, handler: AmqttConnection, packet: Subscribe) -> None:
        """SUBACK with each filter's granted QoS (or failure), then the retained messages of each
        granted filter; a persistent session's filters are stored."""
        codes = [await self.router.subscribe(session, topic_filter, qos) for topic_filter, qos in packet.topics]
        await self._send(handler, Suback(packet.packet_id, codes).encode())
        kept: dict[str, int] = session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
        for (topic_filter, qos), code in zip(packet.topics, codes, strict=True):
            if code <= 2:
                await self.router.send_retained(session, topic_filter, code)
            if self.router.subscribed(session, topic_filter):
                kept[topic_filter] = qos
        await self._save_session(session)

    async def unsubscribe_from(self, session: Session, handler: AmqttConnection, packet: Unsubscribe) -> None:
        kept: dict[str, int] = session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
        for topic_filter in packet.topics:
            self.router.unsubscribe(session, topic_filter)
            kept.pop(topic_filter, None)
        await self._send(handler, Unsuback(packet.packet_id).encode())
        await self._save_session(session)

    # ---- what amqtt's message loop and expiry hand over --------------------------------------

    async def disconnected(self, session: Session) -> None:
        try:
            await self.hooks.disconnected(session)
        except Exception:
            log.exception("the disconnect hook failed for client_id=%r", session.client_id)

    async def publish(self, topic: str | None, data: bytes | bytearray | None, qos: int | None) -> bool:
        """A will (amqtt publishes it, at min(will QoS, granted QoS)) or a broker message."""
        if topic is None:
            return True
        return await self.router.route(topic, data or b"", qos)

    async def retain(self, topic: str | None, data: bytes | bytearray | None, qos: int | None) -> None:
        if topic is not None:
            self.router.retained.set(topic, data or b"", qos or 0)

    async def subscribe(self, session: Session, topic_filter: str, qos: int) -> int:
        return await self.router.subscribe(session, topic_filter, qos)

    def unsubscribe_all(self, session: Session) -> None:
        self.router.remove_client(session)

    async def cleaned_up(self, session: Session | None) -> None:
        """After amqtt's expiry monitor or shutdown dropped a session: only the former ends it for good."""
        if not self._stopping and session is not None and _persistent(session):
            await self._forget(session.client_id or "")

    # ---- persistence of sessions ------------------------------------------------------------

    async def _save_session(self, session: Session) -> None:
        if self.session_store is None or not session.client_id or not _persistent(session):
            return
        try:
            subscriptions = dict(session.attributes.get(_SUBSCRIPTIONS_KEY, {}))
            await self.session_store.save(session.client_id, session_owner(session.attributes), subscriptions)
        except Exception:
            log.exception("could not persist the session of client_id=%r", session.client_id)

    async def _forget(self, client_id: str) -> None:
        if self.session_store is not None and client_id:
            try:
                await self.session_store.delete(client_id)
            except Exception:
                log.exception("could not delete the stored session of client_id=%r", client_id)

    async def restore_sessions(self) -> None:
        """Stored sessions, after amqtt cleared its state in start(), before any client connects."""
        if self.session_store is None:
            return
        await self.session_store.check()
        stored = await self.session_store.load_all()
        for item in stored:
            handler, session = self.offline_session(item.client_id)
            restore_owner(session.attributes, item.owner)
            self.sessions[item.client_id] = (session, handler)
            identity = session_identity(session.attributes)
            if identity is not None and not identity.is_service:  # counted, never refused: it exists
                self._user_sessions.setdefault(identity.user, set()).add(item.client_id)
            kept: dict[str, int] = session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
            for topic_filter, qos in item.subscriptions.items():
                if await self.router.subscribe(session, topic_filter, qos) <= 2:
                    kept[topic_filter] = qos  # the access check runs again: memberships may have changed
            self.offline.restore(session, item)
        if stored:
            log.info("restored %d persistent sessions", len(stored))

    # ---- BrokerView (chatmq/broker/hooks) ---------------------------------------------------

    @property
    def totals(self) -> Totals:
        return self.counters.totals

    @property
    def started_at(self) -> float:
        return self.counters.started_at

    def connected(self) -> list[Session]:
        return [s for s, _h in list(self.sessions.values()) if s.transitions.is_connected()]

    def kept_sessions(self) -> list[Session]:
        return [s for s, _h in list(self.sessions.values())]

    def session(self, client_id: str) -> Session | None:
        return self.sessions.get(client_id, (None, None))[0]

    def filter_count(self) -> int:
        return len(self.router.index)

    async def disconnect(self, session: Session) -> None:
        handler = self.sessions.get(session.client_id or "", (None, None))[1]
        if handler is not None:
            await handler.handle_connection_closed()

    def reply(self, session: Session, topic: str, data: bytes) -> None:
        """Send to one connection only, through the ordinary ordered delivery path (QoS 1)."""
        self.deliveries.enqueue(session, topic, data, 1)
