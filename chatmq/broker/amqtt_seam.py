"""The seam: the one module of the broker that touches amqtt's internals.

chatmq's broker is built on amqtt 0.12.1 (its listeners, WebSocket transport, connection accounting,
session expiry and shutdown sequence) but replaces much of its hot path, because amqtt's version
there is the defect (docs/brokers.md, "The seam"). The three amqtt classes the broker runs are
defined here and nowhere else: ``AmqttBroker`` (amqtt's Broker), ``AmqttConnection`` (its protocol
handler) and ``AmqttSession`` (its session). Every method of amqtt they override is a call into
chatmq's plain broker objects (``BrokerCore``: chatmq/broker/chatbroker.py, with its router,
deliveries, offline queues and retained messages). Wherever this takes an amqtt name that starts
with an underscore, the name is listed in ``INTERNALS`` below with what the broker does with it and
why; other broker modules reach such a name only through a function of this module. ``moved()``
checks each entry against the installed amqtt (the attribute still exists, the method still takes
the parameters we pass or receive, amqtt still calls the method we override from where we expect
it); tests/broker/test_amqtt_seam.py fails with its list when an upgrade moved anything, and checks
that no other broker module names an amqtt internal or extends an amqtt class.

Upgrading amqtt: bump the pin in setup.cfg and ``AMQTT_VERSION`` here, run
``pytest tests/broker/test_amqtt_seam.py``: each line it prints is one place to read again in the new
release (the ``why`` of the entry says what the broker relies on).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker, Server
from amqtt.contexts import ListenerType
from amqtt.errors import ProtocolHandlerError
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session
from transitions import MachineError

from chatmq.broker.session import SmallEvent, SmallQueue

AMQTT_VERSION = "0.12.1"

Kind = Literal["override", "call", "read", "write"]
_BROKER = "amqtt.broker.Broker"
_HANDLER = "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler"
_PROTOCOL = "amqtt.mqtt.protocol.handler.ProtocolHandler"
_SESSION = "amqtt.session.Session"


@dataclass(frozen=True, slots=True)
class Internal:
    """One amqtt internal the broker relies on.

    ``kind``: ``override`` (a class of this module defines it and amqtt calls it), ``call`` (the
    broker calls amqtt's own), ``read``/``write`` (an attribute). ``params``: for methods, the
    parameter names (without self) amqtt passes or the broker passes. ``callers``: the amqtt functions
    that must still call an overridden method, or the override does nothing. Every one is named in
    this module only (the canary checks the other broker modules)."""

    owner: str
    name: str
    kind: Kind
    why: str
    params: tuple[str, ...] | None = None
    callers: tuple[str, ...] = ()


def _b(name: str, kind: Kind, why: str, params: tuple[str, ...] | None = None,
       callers: tuple[str, ...] = ()) -> Internal:  # fmt: skip
    return Internal(_BROKER, name, kind, why, params, tuple(f"{_BROKER}.{c}" for c in callers))


INTERNALS: tuple[Internal, ...] = (
    # ---- the Broker's methods AmqttBroker overrides (amqtt calls them) ----------------------------
    _b("_create_server_instance", "override", "listen backlog 4096 and the WebSocket frame limit sized from "
       "max_packet_bytes (stock: backlog 100, 1 MiB)", ("listener_name", "listener_type", "address", "port",
       "ssl_context"), ("_start_listeners",)),
    _b("_start_listeners", "override", "restore persistent sessions from Redis before the first client "
       "connects", (), ("start",)),
    _b("_initialize_client_session", "override", "authenticate before touching an existing session; "
       "take-over; keepalive grace", ("reader", "writer", "remote_address", "remote_port"),
       ("_client_connected",)),
    _b("_handle_client_session", "override", "CONNACK, replay of what the session is owed, then amqtt's "
       "message loop, without stock's push of every filter's retained messages",
       ("reader", "writer", "client_session", "handler", "server", "listener_name"), ("_client_connected",)),
    _b("_handle_disconnect", "override", "amqtt's (will, transitions), then the disconnect hook",
       ("client_session", "handler", "disconnect_waiter"), ("_client_message_loop",)),
    _b("_broadcast_message", "override", "a will (and internal_message_broadcast) is routed in the "
       "caller's task through the router at min(its QoS, granted QoS) (stock: one shared queue and a "
       "task per delivery)", ("session", "topic", "data", "force_qos"),
       ("_handle_disconnect", "internal_message_broadcast")),
    _b("_cleanup_session", "override", "expiry deletes the stored session, shutdown keeps it",
       ("client_id",), ("_session_monitor", "shutdown")),
    _b("_del_all_subscriptions", "override", "the router's subscription index, O(the client's filters)",
       ("session",), ("_cleanup_session",)),
    _b("_broadcast_loop", "override", "nothing to loop over: routing happens in the caller's task; waits "
       "for shutdown", (), ("start",)),
    _b("_shutdown_broadcast_loop", "override", "also end every outbox writer", (), ("shutdown",)),
    # ---- the Broker's own methods and state the broker uses ---------------------------------------
    _b("_client_message_loop", "override", "the connection's own task waits for the disconnect, and nothing "
       "else: amqtt's loop ran 4 waiter tasks under asyncio.wait (~8 KiB per idle connection) whose other 3 "
       "never fire (the reader handles every packet)", ("client_session", "handler"), ("_handle_client_session",)),
    _b("_broadcast_shutdown_waiter", "read", "what _broadcast_loop waits for"),
    _b("_subscriptions", "write", "replaced by a read-only view over the router's index, so amqtt's "
       "own readers (BrokerContext.subscriptions) see the index"),
    # ---- the protocol handler (AmqttConnection) -----------------------------------------------------
    Internal(_PROTOCOL, "_reader_loop", "override", "the packet reader (chatmq/broker/reader.py): one sans-IO "
             "codec, routing in the reader's task, one keepalive timer", (), (f"{_PROTOCOL}.start",)),
    Internal(_PROTOCOL, "_retry_deliveries", "override", "nothing: the broker replays unacknowledged "
             "deliveries itself, pipelined", (), (f"{_PROTOCOL}.start",)),
    Internal(_PROTOCOL, "_write_lock", "read", "one writer at a time (amqtt's WebSocket writer loses bytes "
             "written during another drain)"),
    Internal(_HANDLER, "start", "override", "amqtt's start (ProtocolHandler's and this one's: re-read both "
             "on an upgrade) without asyncio.Events nor keepalive timer per connection (~1.9 KiB)", (),
             ("amqtt.broker.Broker._handle_client_session",)),
    Internal(_PROTOCOL, "_reader_ready", "write", "a SmallEvent: start() waits until the reader runs"),
    Internal(_PROTOCOL, "_reader_stopped", "write", "a SmallEvent: handler.stop() waits until the reader ended"),
    Internal(_PROTOCOL, "_reader_task", "write", "what handler.stop() cancels"),
    Internal(_HANDLER, "_pending_subscriptions", "write", "a small queue instead of an asyncio.Queue "
             "(~3 KiB per connection; amqtt's message loop still waits on it)"),
    Internal(_HANDLER, "_pending_unsubscriptions", "write", "as _pending_subscriptions"),
    Internal(_HANDLER, "_disconnect_waiter", "write", "start() makes it (as amqtt's does); a keepalive "
             "expiry closes only a live connection"),
    Internal("amqtt.adapters.StreamReaderAdapter", "_reader", "read", "one read takes every packet the "
             "TCP socket has buffered (the adapter reads exactly n bytes)"),
    Internal("amqtt.adapters.StreamWriterAdapter", "_writer", "read", "deliveries to an idle TCP "
             "connection are written to its transport at the end of the loop turn"),
    # ---- sessions (AmqttSession) ------------------------------------------------------------------
    Internal(_SESSION, "_init_states", "override", "a two-field state machine instead of a transitions "
             "Machine (~16 KiB and 15% of a CONNECT's CPU)", (), (f"{_SESSION}.__init__",)),
    Internal(_SESSION, "_on_enter_connected", "call", "the connect time, as transitions would call it", ()),
    Internal(_SESSION, "_on_enter_disconnected", "call", "the disconnect time (session expiry)", ()),
)


# ---- the three amqtt classes the broker runs ----------------------------------------------------

NEW, CONNECTED, DISCONNECTED = "new", "connected", "disconnected"


class SessionStates:
    """Session.states with Session's transitions: connect (new|disconnected -> connected) and
    disconnect (any -> disconnected), calling the session's on-enter hooks like transitions does."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = NEW

    def connect(self) -> bool:
        if self.state == CONNECTED:
            raise MachineError(f"Can't trigger event connect from state {self.state}!")
        self.state = CONNECTED
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = DISCONNECTED
        self._session._on_enter_disconnected()
        return True

    def is_new(self) -> bool:
        return self.state == NEW

    def is_connected(self) -> bool:
        return self.state == CONNECTED

    def is_disconnected(self) -> bool:
        return self.state == DISCONNECTED

    def is_state(self, state: str, _model: Any = None) -> bool:
        return self.state == state


class AmqttSession(Session):
    """amqtt's Session with ``SessionStates`` and small queues (chatmq/broker/session.py: the two
    asyncio.Queues amqtt's ``__init__`` builds are dropped at once; ~22 KiB less per session)."""

    def __init__(self) -> None:
        super().__init__()
        self.retained_messages = SmallQueue()  # type: ignore[assignment]  # the offline queue
        self.delivered_message_queue = SmallQueue()  # type: ignore[assignment]

    def _init_states(self) -> None:
        self.transitions = SessionStates(self)  # type: ignore[assignment]


class PacketSource(Protocol):
    """What reads a connection's packets after CONNECT (chatmq/broker/reader.py)."""

    async def run(self) -> None: ...


class AmqttConnection(BrokerProtocolHandler):
    """amqtt's protocol handler: its start/stop and write lock are amqtt's; the packets after CONNECT
    are read by ``packets`` (set by the broker before ``start()``), acknowledgements included."""

    packets: PacketSource

    def __init__(self, plugins_manager: PluginManager[Any], session: Session | None = None) -> None:
        super().__init__(plugins_manager, session)
        self._pending_subscriptions = SmallQueue()  # type: ignore[assignment]  # ~3 KiB less each
        self._pending_unsubscriptions = SmallQueue()  # type: ignore[assignment]

    async def start(self) -> None:
        """amqtt's ``start()`` (the protocol handler's, then the broker handler's disconnect waiter)
        without what a broker connection keeps for nothing while idle: two asyncio.Events (``SmallEvent``
        here: ~1.6 KiB less per connection) and a keepalive timer whose callback does nothing on a broker
        (``BrokerProtocolHandler.handle_write_timeout``; the packet reader keeps the keepalive,
        chatmq/broker/reader.py)."""
        if not self.session:
            raise ProtocolHandlerError("Handler is not attached to a stream")
        self._reader_ready = SmallEvent()  # type: ignore[assignment]
        self._reader_stopped = SmallEvent()  # type: ignore[assignment]
        self._reader_task = asyncio.create_task(self._reader_loop())
        await self._reader_ready.wait()
        await self._retry_deliveries()
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = asyncio.get_running_loop().create_future()

    async def _reader_loop(self) -> None:
        await self.packets.run()

    async def _retry_deliveries(self) -> None:
        """Nothing here: the broker replays unacknowledged deliveries itself once the connection is
        up (``Deliveries.replay``), pipelined and ahead of anything routed after the reconnect.
        amqtt's version awaited each PUBACK (5 s timeout each) in tasks nobody retrieved."""


class BrokerCore(Protocol):
    """What ``AmqttBroker`` calls: chatmq's broker (chatmq/broker/chatbroker.py ``ChatBroker``)."""

    def attach(self, host: AmqttBroker) -> Any: ...
    async def started(self) -> None: ...
    async def stopping(self) -> None: ...
    async def stopped(self) -> None: ...
    async def listen(self, kind: ListenerType, accept: Callable[..., Any], address: str | None, port: int,
                     ssl_context: Any) -> Any: ...  # fmt: skip
    async def restore_sessions(self) -> None: ...
    async def accept(self, reader: ReaderAdapter, writer: WriterAdapter,
                     where: str) -> tuple[AmqttConnection, AmqttSession]: ...  # fmt: skip
    async def open_connection(self, session: Session, handler: AmqttConnection, reader: ReaderAdapter,
                              writer: WriterAdapter) -> SmallEvent: ...  # fmt: skip
    async def disconnected(self, session: Session) -> None: ...
    async def publish(self, topic: str | None, data: bytes | bytearray | None, qos: int | None) -> bool: ...
    async def retain(self, topic: str | None, data: bytes | bytearray | None, qos: int | None) -> None: ...
    async def subscribe(self, session: Session, topic_filter: str, qos: int) -> int: ...
    def unsubscribe_all(self, session: Session) -> None: ...
    async def cleaned_up(self, session: Session | None) -> None: ...
    async def close_deliveries(self) -> None: ...
    def offline_session(self, client_id: str) -> tuple[AmqttConnection, AmqttSession]: ...


class AmqttBroker(Broker):
    """amqtt's Broker hosting chatmq's: every method of amqtt's that chatmq replaces is here, each a
    call into the ``BrokerCore``. What is not here is amqtt's own: listeners, connection accounting,
    the message loop (it waits for the disconnect), session expiry, the shutdown sequence."""

    def __init__(self, config: Any, core: BrokerCore, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, loop=loop)
        self.core = core
        self._subscriptions = core.attach(self)  # a read-only view over the router's index

    async def start(self) -> None:
        await super().start()
        await self.core.started()

    async def shutdown(self) -> None:
        try:
            await self.core.stopping()
        finally:
            try:
                await super().shutdown()
            finally:
                await self.core.stopped()

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        if listener_type not in (ListenerType.TCP, ListenerType.WS):
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        accept = self.stream_connected if listener_type == ListenerType.TCP else self.ws_connected
        return await self.core.listen(listener_type, partial(accept, listener_name=listener_name), address, port,
                                      ssl_context)  # fmt: skip

    async def _start_listeners(self) -> None:
        await self.core.restore_sessions()
        await super()._start_listeners()

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        return await self.core.accept(reader, writer, f"{remote_address}:{remote_port}")

    async def _handle_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, client_session: Session, handler: BrokerProtocolHandler,
        server: Server, listener_name: str,
    ) -> None:  # fmt: skip
        assert isinstance(handler, AmqttConnection)
        ended = await self.core.open_connection(client_session, handler, reader, writer)
        try:
            await self._client_message_loop(client_session, handler)
        finally:
            ended.set()

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """Wait for the connection's end, in the connection's own task. amqtt's loop waited on four
        futures, each its own task (the disconnect, pending subscriptions, pending unsubscriptions, the
        session's delivery queue), under ``asyncio.wait``: ~8 KiB per idle connection and ~11% of a
        CONNECT's CPU, for three waiters that never fire here (the reader handles every packet,
        chatmq/broker/reader.py)."""
        try:
            result = await handler.wait_disconnect()
        except asyncio.CancelledError:
            return  # as amqtt's loop: cancelled, it ends without the disconnect handling
        ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ended.set_result(result)
        await self._handle_disconnect(client_session, handler, ended)

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)
        await self.core.disconnected(client_session)

    async def _broadcast_message(  # type: ignore[override]
        self, session: Session | None, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None
    ) -> bool:
        return await self.core.publish(topic, data, force_qos)

    async def retain_message(
        self, source_session: Session | None, topic_name: str | None, data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:  # fmt: skip
        await self.core.retain(topic_name, data, qos)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        return await self.core.subscribe(session, subscription[0], subscription[1])

    async def _del_all_subscriptions(self, session: Session) -> None:
        self.core.unsubscribe_all(session)

    async def _cleanup_session(self, client_id: str) -> None:
        session = self.sessions.get(client_id, (None, None))[0]
        await super()._cleanup_session(client_id)
        await self.core.cleaned_up(session)

    async def _broadcast_loop(self) -> None:
        await self._broadcast_shutdown_waiter

    async def _shutdown_broadcast_loop(self) -> None:
        await super()._shutdown_broadcast_loop()
        await self.core.close_deliveries()

    def create_offline_session(self, client_id: str) -> tuple[BrokerProtocolHandler, Session]:
        return self.core.offline_session(client_id)


# ---- the accessors: other broker modules read amqtt internals through these only -----------------

def write_lock(handler: BrokerProtocolHandler) -> asyncio.Lock:
    return handler._write_lock


async def clean_disconnect(handler: BrokerProtocolHandler) -> None:
    """The client sent DISCONNECT: amqtt's message loop ends the session without its will (amqtt
    tells a clean end by the type of what its disconnect waiter receives)."""
    await handler.handle_disconnect(DisconnectPacket())


def reader_started(handler: BrokerProtocolHandler) -> None:
    assert handler._reader_ready is not None  # created by handler.start() before the reader runs
    handler._reader_ready.set()


def reader_stopped(handler: BrokerProtocolHandler) -> None:
    handler._reader_stopped.set()


def disconnect_pending(handler: BrokerProtocolHandler) -> bool:
    """The connection is live: nobody has reported its end to the broker's message loop yet."""
    waiter = handler._disconnect_waiter
    return waiter is not None and not waiter.done()


def tcp_stream(reader: ReaderAdapter) -> asyncio.StreamReader | None:
    """The asyncio stream under a TCP connection's reader (None for WebSocket)."""
    return reader._reader if isinstance(reader, StreamReaderAdapter) else None


def tcp_transport(writer: WriterAdapter | None) -> asyncio.WriteTransport | None:
    """The transport under a TCP connection's writer (None for WebSocket)."""
    if isinstance(writer, StreamWriterAdapter):
        transport: asyncio.WriteTransport = writer._writer.transport
        return transport
    return None


# ---- the canary ----------------------------------------------------------------------------------

def _resolve(dotted: str) -> Any:
    module_name, _, rest = dotted.partition(".")
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            target = getattr(target, part)
        return target
    raise ImportError(module_name + rest)


def _sets(cls: type, name: str) -> bool:
    """Some class of ``cls``'s MRO assigns ``self.name`` (instance attributes live in __init__ and start)."""
    pattern = re.compile(rf"self\.{re.escape(name)}\b\s*(:[^=\n]+)?=(?!=)")
    for klass in cls.__mro__:
        if klass.__module__.startswith("amqtt") and pattern.search(inspect.getsource(klass)):
            return True
    return False


def _problem(item: Internal) -> str | None:
    try:
        owner = _resolve(item.owner)
    except (ImportError, AttributeError):
        return f"{item.owner} is gone"
    if item.kind in ("read", "write"):
        return None if _sets(owner, item.name) else "no longer set by amqtt"
    member = inspect.getattr_static(owner, item.name, None)
    if member is None:
        return "no longer defined"
    if item.params is not None:
        function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        params = tuple(p for p in inspect.signature(function).parameters if p not in ("self", "cls"))
        if params != item.params:
            return f"parameters are now {params}, the seam relies on {item.params}"
    for caller in item.callers:
        try:
            source = inspect.getsource(_resolve(caller))
        except (ImportError, AttributeError, TypeError):
            return f"its caller {caller} is gone"
        if not re.search(rf"\.{re.escape(item.name)}\(", source):
            return f"{caller} no longer calls it (the override would never run)"
    return None


def moved() -> list[str]:
    """Every internal of ``INTERNALS`` that the installed amqtt no longer provides as the seam expects,
    one line each; and the version, when it is not the one the seam was written against."""
    from importlib.metadata import version

    found = []
    installed = version("amqtt")
    if installed != AMQTT_VERSION:
        found.append(f"amqtt {installed} installed, the seam was written against {AMQTT_VERSION}")
    for item in INTERNALS:
        problem = _problem(item)
        if problem is not None:
            found.append(f"{item.owner}.{item.name} ({item.kind}): {problem} -- the seam uses it to: {item.why}")
    return found
