"""ChatBroker: amqtt's Broker with the session, delivery and connection defects of 0.12 fixed.

Routing (matching topics against filters) is not touched here: it belongs to ``RoutingMixin``
(chatmq/broker/routing.py). Every override below names the amqtt 0.12 defect it fixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import websockets
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker, Server
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, IncomingApplicationMessage, Session
from amqtt.utils import gen_client_id

from chatmq.broker import amqtt_seam
from chatmq.broker.connection import KEEPALIVE_GRACE, ConnectionHandler, Published, effective_qos
from chatmq.broker.hooks import HOOKS_VERSION, Hooks
from chatmq.broker.hooks.control import CONTROL_TOPICS, Control
from chatmq.broker.routing import RoutingMixin, count_queued, queued_bytes
from chatmq.broker.services import restore_owner, session_identity, session_owner
from chatmq.broker.session import BrokerSession
from chatmq.broker.session_store import QueuedMessage, SessionStore
from chatmq.core.access import Action
from chatmq.core.mqtt.codec import CONNACK_IDENTIFIER_REJECTED, CONNACK_NOT_AUTHORIZED, Connack, PacketTooLarge
from chatmq.core.protocol import PayloadError, parse_typing
from chatmq.core.ratelimit import LocalRate

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # a socket that never sends CONNECT must not hold a connection slot
LISTEN_BACKLOG = 4096  # pending connections the kernel keeps (capped by net.core.somaxconn)
TAKEOVER_TIMEOUT_S = 5.0
_SUBSCRIPTIONS_KEY = "chatmq.subscriptions"  # filter -> granted QoS, what a persistent session keeps
_LOOP_DONE_KEY = "chatmq.loop_done"
_OVERFLOW_KEY = "chatmq.queue_overflowing"


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


def _persistent(session: Session) -> bool:
    return not session.clean_session


def _is_device(session: Session) -> bool:
    """Logged in as a chat user (not the bridge's service identity, not anonymous)."""
    identity = session_identity(session.attributes)
    return identity is not None and not identity.is_service


def _resolved(value: Any) -> asyncio.Future[Any]:
    """amqtt's subscription handlers take the future their message loop waited on."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class ChatBroker(RoutingMixin, Broker):
    def __init__(
        self,
        config: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: BrokerLimits | None = None,
        sessions: SessionStore | None = None,
        hooks: Hooks,
        ws_permessage_deflate: bool = False,
    ) -> None:
        if hooks.version != HOOKS_VERSION:
            raise ValueError(f"hooks of version {hooks.version}; this broker calls version {HOOKS_VERSION}")
        super().__init__(config, loop=loop)
        self.hooks = hooks
        self.limits = limits or BrokerLimits()
        self.ws_permessage_deflate = ws_permessage_deflate  # Settings.ws_permessage_deflate
        self.session_store = sessions
        self._typing_rate = LocalRate(self.limits.typing_per_s, self.limits.typing_burst)
        self._user_sessions: dict[str, set[str]] = {}  # user -> client ids (pruned as it is read)
        self._stopping = False

    # ---- connection set-up -------------------------------------------------------------------

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        """amqtt 0.12 defect: the websockets library's own 1 MiB message limit closes the connection
        (and loses the message) before amqtt sees it; size it from our limit so the codec's limit,
        shared with TCP, decides (``ConnectionHandler`` and chatmq/broker/reader.py read through it).

        amqtt 0.12 defect: both listeners had asyncio's default listen backlog (100). When every
        device reconnects after a restart, the kernel drops the SYNs beyond it and the clients' TCP
        retransmits (after 1, 3, 7, 15 s...) stretched a 2,000-device storm to 40 s."""
        if listener_type == ListenerType.TCP:
            return await asyncio.start_server(
                partial(self.stream_connected, listener_name=listener_name),
                address,
                port,
                reuse_address=True,
                ssl=ssl_context,
                backlog=LISTEN_BACKLOG,
            )
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        return await websockets.serve(
            partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            # permessage-deflate only when configured: docs/benchmarks.md, "WebSocket compression"
            compression="deflate" if self.ws_permessage_deflate else None,
            max_size=max(self.limits.max_packet_bytes + 16, 1 << 20),
            backlog=LISTEN_BACKLOG,
        )

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt 0.12 defect: a CONNECT reusing a live client id kicked the victim, reported its
        session-present flag and (clean session) deleted its subscriptions BEFORE authentication,
        and every failed login left a session behind. Here authentication comes first and a refused
        CONNECT touches no existing state."""
        where = f"{remote_address}:{remote_port}"
        try:
            handler, incoming = await asyncio.wait_for(
                ConnectionHandler.init_from_connect(reader, writer, self.plugins_manager,
                                              max_packet_bytes=self.limits.max_packet_bytes),
                CONNECT_TIMEOUT_S,
            )  # fmt: skip
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
            incoming.will_retain = False  # a device's will is its offline notice: never kept (see _route_publish)

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
                await self._delete_session(incoming.client_id)
            session = incoming
            session.parent = 0
        else:
            for field in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive"):
                setattr(existing, field, getattr(incoming, field))
            existing.username, existing.password = incoming.username, incoming.password
            existing.remote_address, existing.remote_port = incoming.remote_address, incoming.remote_port
            existing.clean_session = False
            restore_owner(existing.attributes, session_owner(incoming.attributes))
            session = existing
            session.parent = 1
        # amqtt 0.12 defect: the reader's timeout is the bare keepalive and expiry is ignored; the
        # handler now disconnects on it, after the 1.5x grace of MQTT-3.1.2-24.
        session.keep_alive = incoming.keep_alive * KEEPALIVE_GRACE if incoming.keep_alive > 0 else 0
        return handler, session

    async def _login(self, session: Session, where: str) -> bool:
        """The hooks let the client in (``authenticate``), and let it leave its will (``acl_check``
        of WILL: amqtt would publish a will without any check)."""
        try:
            if not await self.hooks.authenticate(session):
                return False
        except Exception:
            log.exception("refused login (authentication error): client_id=%r from %s", session.client_id, where)
            return False
        if session.will_flag and not await self._acl_check(session, Action.WILL, session.will_topic or ""):
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
        done: asyncio.Event | None = existing.attributes.get(_LOOP_DONE_KEY)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TAKEOVER_TIMEOUT_S)

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

    def create_offline_session(self, client_id: str) -> tuple[BrokerProtocolHandler, Session]:
        session = BrokerSession()  # chatmq/broker/session.py: ~22 KiB less per restored session
        session.client_id = client_id
        session.clean_session = False
        handler = ConnectionHandler(self.plugins_manager, session)
        session.transitions.disconnect()
        return handler, session

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Server,
        listener_name: str,
    ) -> None:
        """Authentication already happened in ``_initialize_client_session``.

        amqtt 0.12 defect: after CONNACK amqtt pushed the retained messages of every filter any
        client held, at QoS 0 and without the RECEIVE check; retained messages are now only sent
        for a client's own new subscription (``_publish_retained_messages_for_subscription``)."""
        if client_session.transitions.is_connected():  # the previous connection's loop did not end in time
            client_session.transitions.disconnect()
        client_session.transitions.connect()
        handler.attach(client_session, reader, writer)
        if isinstance(handler, ConnectionHandler):
            handler.inbound = self  # packets after CONNECT are parsed and routed inline (chatmq/broker/reader.py)
        assert client_session.client_id is not None
        self.sessions[client_session.client_id] = (client_session, handler)
        self._hold_deliveries(client_session, handler)  # what it is owed goes out before them
        done = asyncio.Event()
        client_session.attributes[_LOOP_DONE_KEY] = done
        try:
            await handler.mqtt_connack_authorize(True)
            await self._save_session(client_session)
            await handler.start()
            await self._replay(client_session, handler, await self._take_offline_queue(client_session))
            await amqtt_seam.message_loop(self, client_session, handler)
        finally:
            done.set()

    # ---- publishes from clients --------------------------------------------------------------

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """A QoS 2 publish, once its handshake delivered it. amqtt 0.12 defect: a publish to a ``$``
        topic ended the message loop but left the socket open (a zombie that never answers again);
        ``_route_publish`` drops it. (A wildcard or empty topic never gets here: the codec closes
        the connection on such a PUBLISH, MQTT-3.3.2-2.)"""
        app_message = wait_deliver.result()
        if app_message is not None:
            await self._route_publish(client_session, handler, app_message)
        return True

    async def inbound_publish(
        self, session: Session, handler: BrokerProtocolHandler, message: IncomingApplicationMessage
    ) -> bool:
        return await self._route_publish(session, handler, message)

    async def inbound_subscribe(self, session: Session, handler: BrokerProtocolHandler, subscription: Any) -> None:
        await self._handle_subscription(session, handler, _resolved(subscription))

    async def inbound_unsubscribe(self, session: Session, handler: BrokerProtocolHandler, unsubscription: Any) -> None:
        await self._handle_unsubscription(session, handler, _resolved(unsubscription))

    async def _route_publish(
        self, client_session: Session, handler: BrokerProtocolHandler, app_message: ApplicationMessage
    ) -> bool:
        """Route one client publish; False only when it was not taken and must not be acknowledged."""
        topic = app_message.topic  # never empty nor a wildcard: the codec refused such a PUBLISH [MQTT-3.3.2-2]
        if topic.startswith(CONTROL_TOPICS):
            verdict = await self.hooks.control(client_session, topic, bytes(app_message.data or b""))
            if verdict is Control.HANDLED:
                return True
            if verdict is Control.REFUSED:
                await handler.handle_connection_closed()
                return False
        if topic.startswith("$"):
            log.info("client_id=%r published to %r: '$' topics are reserved, dropped", client_session.client_id, topic)
            self._reject("reserved_topic")
            return True
        if not await self._acl_check(client_session, Action.PUBLISH, topic):
            log.info("client_id=%r may not publish to %r: dropped", client_session.client_id, topic)
            return True
        retain = app_message.retain
        if _is_device(client_session):
            # A device publishes only chat topics and its device presence: events, never state. A
            # retained one would be replayed to every new subscriber (stale typing, a send stored
            # again by a restarted bridge) and held by the broker for ever: relayed, never retained.
            retain = False
            if topic.startswith("chat/") and not self._typing_passes(client_session, topic, app_message.data):
                return True
        taken = await self._broadcast_message(client_session, topic, Published(app_message.data, app_message.qos or 0))
        if taken and retain:
            await self.retain_message(client_session, topic, app_message.data, app_message.qos)
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
            self._reject("typing_invalid")
            return False
        if not self._typing_rate.allow(levels[3]):
            self._reject("typing_rate_limited")
            return False
        return True

    def _reject(self, reason: str) -> None:
        """A publish or delivery refused, for the operator's counters (chatmq/broker/ops.py)."""


    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        """amqtt 0.12 defect: publishes already acknowledged (PUBACK sent) but still waiting in the
        session's delivery queue were dropped when the publisher disconnected. Route them first."""
        queue = client_session.delivered_message_queue
        while not queue.empty():
            message = queue.get_nowait()
            if isinstance(message, IncomingApplicationMessage):
                await self._route_publish(client_session, handler, message)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)
        try:
            await self.hooks.disconnected(client_session)
        except Exception:
            log.exception("the disconnect hook failed for client_id=%r", client_session.client_id)

    async def _broadcast_message(
        self, session: Session | None, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None
    ) -> bool:
        """A last will is broadcast with a forced QoS: deliver it at min(will QoS, granted QoS)."""
        if session is not None and force_qos is not None and data is not None:
            data, force_qos = Published(data, force_qos), None
        return await super()._broadcast_message(session, topic, data, force_qos)

    # ---- offline queues, redelivery and retained messages ------------------------------------

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> bool:
        """amqtt 0.12 defect: offline messages were queued at the subscription's QoS (QoS 0 upgraded)
        and without a bound. Queue at min(publish, granted) QoS, QoS 0 not at all, and in Redis so a
        restart keeps them. A device session keeps at most ``session_queue_limit`` messages and
        ``session_queue_bytes`` (beyond, new messages are dropped: the history API has them). The
        bridge's session is only bounded by ``service_queue_bytes``, and a message that does not fit
        is refused (False): its publisher gets no PUBACK instead of a promise the broker cannot keep."""
        data = broadcast["data"]
        qos = effective_qos(data, qos) or 0
        if qos == 0:
            return True
        queue = target_session.retained_messages
        held = queued_bytes(target_session)
        identity = session_identity(target_session.attributes)
        if identity is not None and identity.is_service:
            full = held + len(data) > self.limits.service_queue_bytes
            limit = f"service_queue_bytes={self.limits.service_queue_bytes}: withholding PUBACKs from senders"
        else:
            full = (queue.qsize() >= self.limits.session_queue_limit
                    or held + len(data) > self.limits.session_queue_bytes)  # fmt: skip
            limit = (f"session_queue_limit={self.limits.session_queue_limit}, session_queue_bytes="
                     f"{self.limits.session_queue_bytes}: dropping new messages")  # fmt: skip
        if full:
            if not target_session.attributes.get(_OVERFLOW_KEY):
                log.warning("offline queue of client_id=%r is full (%s) until it reconnects",
                            target_session.client_id, limit)  # fmt: skip
            target_session.attributes[_OVERFLOW_KEY] = True
            return identity is None or not identity.is_service
        message = ApplicationMessage(None, broadcast["topic"], qos, bytes(data), False)
        queue.put_nowait(message)
        count_queued(target_session, len(data))
        if self.session_store is not None and target_session.client_id:
            try:
                stored = QueuedMessage(message.topic, message.data, qos)
                await self.session_store.enqueue(target_session.client_id, stored)
            except Exception:
                log.exception("could not persist a queued message for client_id=%r", target_session.client_id)
        return True

    async def _take_offline_queue(self, session: Session) -> list[tuple[str, bytes | bytearray, int]]:
        """The messages queued while the session was offline, for ``_replay``. amqtt 0.12 defect:
        they were delivered with retain=1 (MQTT-3.3.1-9 wants 0), one task and ack wait each, and
        after live messages routed meanwhile."""
        session.attributes.pop(_OVERFLOW_KEY, None)
        count_queued(session, -queued_bytes(session))
        queued: list[tuple[str, bytes | bytearray, int]] = []
        while not session.retained_messages.empty():
            message = session.retained_messages.get_nowait()
            queued.append((message.topic, message.data, message.qos or 1))
        if self.session_store is not None and session.client_id and _persistent(session):
            # what is not acknowledged yet is in flight from here on; shutdown writes it back
            with contextlib.suppress(Exception):
                await self.session_store.replace_queue(session.client_id, [])
        return queued

    # ---- persistence of sessions ------------------------------------------------------------

    async def _handle_subscription(
        self, client_session: Session, handler: BrokerProtocolHandler, subscribe_waiter: asyncio.Future[Any]
    ) -> None:
        await super()._handle_subscription(client_session, handler, subscribe_waiter)
        kept: dict[str, int] = client_session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
        for topic_filter, qos in subscribe_waiter.result().topics:
            if self._subscribed(client_session, topic_filter):
                kept[topic_filter] = qos
        await self._save_session(client_session)

    async def _handle_unsubscription(
        self, client_session: Session, handler: BrokerProtocolHandler, unsubscribe_waiter: asyncio.Future[Any]
    ) -> None:
        await super()._handle_unsubscription(client_session, handler, unsubscribe_waiter)
        kept: dict[str, int] = client_session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
        for topic_filter in unsubscribe_waiter.result().topics:
            kept.pop(topic_filter, None)
        await self._save_session(client_session)

    def _subscribed(self, session: Session, topic_filter: str) -> bool:
        return session.client_id in (self._routing_index.subscribers(topic_filter) or {})

    async def _save_session(self, session: Session) -> None:
        if self.session_store is None or not session.client_id or not _persistent(session):
            return
        try:
            subscriptions = dict(session.attributes.get(_SUBSCRIPTIONS_KEY, {}))
            await self.session_store.save(session.client_id, session_owner(session.attributes), subscriptions)
        except Exception:
            log.exception("could not persist the session of client_id=%r", session.client_id)

    async def _delete_session(self, client_id: str) -> None:
        await super()._delete_session(client_id)
        await self._forget(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        """Called by amqtt's expiry monitor and at shutdown: only the former ends a session for good."""
        session = self.sessions.get(client_id, (None, None))[0]
        await super()._cleanup_session(client_id)
        if not self._stopping and session is not None and _persistent(session):
            await self._forget(client_id)

    async def _forget(self, client_id: str) -> None:
        if self.session_store is not None:
            try:
                await self.session_store.delete(client_id)
            except Exception:
                log.exception("could not delete the stored session of client_id=%r", client_id)

    async def _start_listeners(self) -> None:
        """Restore stored sessions after amqtt cleared its state in start(), before any client connects."""
        if self.session_store is not None:
            await self.session_store.check()
            await self._restore_sessions(self.session_store)
        await super()._start_listeners()

    async def _restore_sessions(self, store: SessionStore) -> None:
        stored = await store.load_all()
        for item in stored:
            handler, session = self.create_offline_session(item.client_id)
            restore_owner(session.attributes, item.owner)
            self.sessions[item.client_id] = (session, handler)
            identity = session_identity(session.attributes)
            if identity is not None and not identity.is_service:  # counted, never refused: it exists
                self._user_sessions.setdefault(identity.user, set()).add(item.client_id)
            kept: dict[str, int] = session.attributes.setdefault(_SUBSCRIPTIONS_KEY, {})
            for topic_filter, qos in item.subscriptions.items():
                if await self.add_subscription((topic_filter, qos), session) != 0x80:
                    kept[topic_filter] = qos  # the access check runs again: memberships may have changed
            identity = session_identity(session.attributes)
            keep = item.queue if identity is not None and identity.is_service else \
                item.queue[-self.limits.session_queue_limit :]
            for message in keep:  # everything the bridge has not stored yet; a device's newest
                queued = ApplicationMessage(None, message.topic, message.qos, message.data, False)
                session.retained_messages.put_nowait(queued)
                count_queued(session, len(message.data))
        if stored:
            log.info("restored %d persistent sessions", len(stored))

    async def shutdown(self) -> None:
        """Write back what persistent sessions still owe their clients (queued and unacknowledged
        in-flight messages), then let amqtt shut down without deleting the stored sessions."""
        self._stopping = True
        if self.session_store is not None:
            for client_id, (session, _) in list(self.sessions.items()):
                if not _persistent(session):
                    continue
                queued = [session.retained_messages.get_nowait() for _ in range(session.retained_messages.qsize())]
                owed = [QueuedMessage(m.topic, bytes(m.data), m.qos or 1) for m in session.inflight_out.values()]
                owed += [QueuedMessage(topic, bytes(data), qos) for topic, data, qos in self._undelivered(session)]
                owed += [QueuedMessage(m.topic, bytes(m.data), m.qos or 1) for m in queued]
                try:
                    await self.session_store.replace_queue(client_id, owed)
                except Exception:
                    log.exception("could not persist the queue of client_id=%r at shutdown", client_id)
        try:
            await super().shutdown()
        finally:
            if self.session_store is not None:
                await self.session_store.close()
