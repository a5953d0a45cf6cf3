"""The seam: the one module of the broker that touches amqtt's internals.

chatmq's broker is built on amqtt 0.12.1 (its listeners, WebSocket transport, sessions and plugin
loading) but replaces much of its hot path, because amqtt's version there is the defect (docs/brokers.md,
"The seam"). Wherever that takes an amqtt name that starts with an underscore, the name is listed
in ``INTERNALS`` below with what the broker does with it and why, and every read or write of such
a name goes through a function of this module. ``moved()`` checks each entry against the installed
amqtt (the attribute still exists, the method still takes the parameters we pass or receive, amqtt
still calls the method we override from where we expect it); tests/broker/test_amqtt_seam.py fails
with its list when an upgrade moved anything, and checks that no other broker module names an
amqtt internal outside this table.

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
from typing import Any, Literal

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session

from chatmq.core.mqtt.codec import PacketType

AMQTT_VERSION = "0.12.1"

Kind = Literal["override", "call", "read", "write"]
_BROKER = "amqtt.broker.Broker"
_HANDLER = "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler"
_PROTOCOL = "amqtt.mqtt.protocol.handler.ProtocolHandler"
_SESSION = "amqtt.session.Session"


@dataclass(frozen=True, slots=True)
class Internal:
    """One amqtt internal the broker relies on.

    ``kind``: ``override`` (a broker class defines it and amqtt calls it), ``call`` (the broker calls
    amqtt's own), ``read``/``write`` (an attribute). ``params``: for methods, the parameter names
    (without self) amqtt passes or the broker passes. ``callers``: the amqtt functions that must still
    call an overridden method, or the override does nothing. ``where``: the broker modules that
    name it (besides this one)."""

    owner: str
    name: str
    kind: Kind
    why: str
    params: tuple[str, ...] | None = None
    callers: tuple[str, ...] = ()
    where: tuple[str, ...] = ()


def _b(name: str, kind: Kind, why: str, params: tuple[str, ...] | None = None, callers: tuple[str, ...] = (),
       where: tuple[str, ...] = ()) -> Internal:  # fmt: skip
    return Internal(_BROKER, name, kind, why, params, tuple(f"{_BROKER}.{c}" for c in callers), where)


INTERNALS: tuple[Internal, ...] = (
    # ---- the Broker's methods the broker classes override (amqtt calls them) --------------------
    _b("_create_server_instance", "override", "listen backlog 4096 and the WebSocket frame limit sized from "
       "max_packet_bytes (stock: backlog 100, 1 MiB)", ("listener_name", "listener_type", "address", "port",
       "ssl_context"), ("_start_listeners",), ("chatbroker",)),
    _b("_start_listeners", "override", "restore persistent sessions from Redis before the first client "
       "connects", (), ("start",), ("chatbroker",)),
    _b("_initialize_client_session", "override", "authenticate before touching an existing session; "
       "take-over; keepalive grace", ("reader", "writer", "remote_address", "remote_port"),
       ("_client_connected",), ("chatbroker", "ops")),
    _b("_handle_client_session", "override", "CONNACK, replay of what the session is owed, then the "
       "message loop, without stock's push of every filter's retained messages",
       ("reader", "writer", "client_session", "handler", "server", "listener_name"), ("_client_connected",),
       ("chatbroker", "ops")),
    _b("_handle_message_delivery", "override", "a publish from the message loop (QoS 2) goes through "
       "_route_publish", ("client_session", "handler", "wait_deliver"), ("_client_message_loop",), ("chatbroker",)),
    _b("_handle_disconnect", "override", "route publishes already acknowledged before the session ends; "
       "then amqtt's (will, transitions)", ("client_session", "handler", "disconnect_waiter"),
       ("_client_message_loop",), ("chatbroker",)),
    _b("_handle_subscription", "override", "persist the session's filters; amqtt's sends SUBACK and "
       "retained messages", ("client_session", "handler", "subscribe_waiter"), ("_client_message_loop",),
       ("chatbroker",)),
    _b("_handle_unsubscription", "override", "persist the session's filters",
       ("client_session", "handler", "unsubscribe_waiter"), ("_client_message_loop",), ("chatbroker",)),
    _b("_broadcast_message", "override", "route in the caller's task through the index (stock: one shared "
       "queue and a task per delivery); a will at min(will QoS, granted QoS)",
       ("session", "topic", "data", "force_qos"), ("_handle_disconnect", "internal_message_broadcast"),
       ("chatbroker", "routing")),
    _b("_retain_broadcast_message", "override", "bounded offline queue at min(publish, granted) QoS, kept "
       "in Redis", ("broadcast", "qos", "target_session"), (), ("chatbroker", "routing")),
    _b("_delete_session", "override", "also delete the stored session", ("client_id",),
       ("_initialize_client_session",), ("chatbroker",)),
    _b("_cleanup_session", "override", "expiry deletes the stored session, shutdown keeps it",
       ("client_id",), ("_session_monitor", "shutdown"), ("chatbroker",)),
    _b("add_subscription", "override", "the subscription index (stock: a list scanned per message)",
       ("subscription", "session"), ("_handle_subscription",), ("routing",)),
    _b("_del_subscription", "override", "the subscription index", ("a_filter", "session"),
       ("_handle_unsubscription",), ("routing",)),
    _b("_del_all_subscriptions", "override", "the subscription index, O(the client's filters)",
       ("session",), ("_cleanup_session", "_delete_session"), ("routing",)),
    _b("_broadcast_loop", "override", "nothing to loop over: routing happens in the caller's task; waits "
       "for shutdown", (), ("start",), ("routing",)),
    _b("_shutdown_broadcast_loop", "override", "also end every outbox writer", (), ("shutdown",), ("routing",)),
    _b("_publish_retained_messages_for_subscription", "override", "retained messages after the RECEIVE "
       "check, through the session's outbox", ("subscription", "session"), ("_handle_subscription",),
       ("routing",)),
    # ---- the Broker's own methods and state the broker uses ---------------------------------------
    _b("_client_message_loop", "call", "amqtt's loop still serves QoS 2 publishes and the disconnect "
       "waiter", ("client_session", "handler")),
    _b("_broadcast_shutdown_waiter", "read", "what _broadcast_loop waits for"),
    _b("_subscriptions", "write", "replaced by a read-only view over the subscription index, so amqtt's "
       "own readers (BrokerContext.subscriptions) see the index"),
    # ---- the protocol handler ----------------------------------------------------------------------
    Internal(_PROTOCOL, "_reader_loop", "override", "the inline reader (chatmq/broker/reader.py): one sans-IO "
             "codec, routing in the reader's task, one keepalive timer", (), (f"{_PROTOCOL}.start",),
             ("reader",)),
    Internal(_PROTOCOL, "_retry_deliveries", "override", "nothing: the broker replays unacknowledged "
             "deliveries itself, pipelined", (), (f"{_PROTOCOL}.start",), ("connection",)),
    Internal(_PROTOCOL, "_handle_qos1_message_flow", "override", "keep an unacknowledged delivery in "
             "flight when the connection drops", ("app_message",), (f"{_PROTOCOL}._handle_message_flow",),
             ("connection",)),
    Internal(_PROTOCOL, "_handle_qos2_message_flow", "override", "as QoS 1", ("app_message",),
             (f"{_PROTOCOL}._handle_message_flow",), ("connection",)),
    Internal(_PROTOCOL, "_handle_message_flow", "call", "QoS 2 publishes and deliveries keep amqtt's "
             "handshake", ("app_message",)),
    Internal(_PROTOCOL, "_write_lock", "read", "one writer at a time (amqtt's WebSocket writer loses bytes "
             "written during another drain)"),
    Internal(_PROTOCOL, "_puback_waiters", "read", "a PUBACK for one of amqtt's own QoS 1 flows"),
    Internal(_PROTOCOL, "_pubrec_waiters", "read", "the QoS 2 handshake's waiters"),
    Internal(_PROTOCOL, "_pubrel_waiters", "read", "the QoS 2 handshake's waiters"),
    Internal(_PROTOCOL, "_pubcomp_waiters", "read", "the QoS 2 handshake's waiters"),
    Internal(_PROTOCOL, "_reader_ready", "read", "handler.start() waits until the reader runs"),
    Internal(_PROTOCOL, "_reader_stopped", "read", "handler.stop() waits until the reader ended"),
    Internal(_HANDLER, "_pending_subscriptions", "write", "a small queue instead of an asyncio.Queue "
             "(~3 KiB per connection; amqtt's message loop still waits on it)"),
    Internal(_HANDLER, "_pending_unsubscriptions", "write", "as _pending_subscriptions"),
    Internal(_HANDLER, "_disconnect_waiter", "read", "a keepalive expiry closes only a live connection"),
    Internal("amqtt.adapters.StreamReaderAdapter", "_reader", "read", "one read takes every packet the "
             "TCP socket has buffered (the adapter reads exactly n bytes)"),
    Internal("amqtt.adapters.StreamWriterAdapter", "_writer", "read", "deliveries to an idle TCP "
             "connection are written to its transport at the end of the loop turn"),
    # ---- sessions (chatmq/broker/session.py) -----------------------------------------------------------------
    Internal(_SESSION, "_init_states", "override", "a two-field state machine instead of a transitions "
             "Machine (~16 KiB and 15% of a CONNECT's CPU)", (), (f"{_SESSION}.__init__",), ("session",)),
    Internal(_SESSION, "_on_enter_connected", "call", "the connect time, as transitions would call it", ()),
    Internal(_SESSION, "_on_enter_disconnected", "call", "the disconnect time (session expiry)", ()),
)


# ---- the accessors: every read or write of an internal above goes through one of these -----------

def write_lock(handler: BrokerProtocolHandler) -> asyncio.Lock:
    return handler._write_lock


_WAITERS = {PacketType.PUBACK: "_puback_waiters", PacketType.PUBREC: "_pubrec_waiters",
            PacketType.PUBREL: "_pubrel_waiters", PacketType.PUBCOMP: "_pubcomp_waiters"}  # fmt: skip


def ack_waiters(handler: BrokerProtocolHandler, kind: PacketType) -> dict[int, asyncio.Future[Any]]:
    """amqtt's own QoS 1/2 flows wait here, by packet id, for the acknowledgement of ``kind``."""
    waiters: dict[int, asyncio.Future[Any]] = getattr(handler, _WAITERS[kind])
    return waiters


async def message_flow(handler: BrokerProtocolHandler,
                       message: IncomingApplicationMessage | OutgoingApplicationMessage) -> None:  # fmt: skip
    """amqtt's QoS handshake for one message (the broker uses it for QoS 2 only)."""
    await handler._handle_message_flow(message)


def reader_started(handler: BrokerProtocolHandler) -> None:
    assert handler._reader_ready is not None  # created by handler.start() before the reader runs
    handler._reader_ready.set()


def reader_stopped(handler: BrokerProtocolHandler) -> None:
    handler._reader_stopped.set()


def use_queues(handler: BrokerProtocolHandler, make: Callable[[], Any]) -> None:
    """The handler's two pending-(un)subscription queues, built by ``make`` (chatmq/broker/session.py)."""
    handler._pending_subscriptions = make()
    handler._pending_unsubscriptions = make()


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




def broadcast_shutdown(broker: Broker) -> asyncio.Future[Any]:
    return broker._broadcast_shutdown_waiter


def use_subscriptions(broker: Broker, view: Any) -> None:
    """amqtt's ``_subscriptions`` dict becomes ``view``: amqtt and its plugins read it, chatmq routes."""
    broker._subscriptions = view




async def message_loop(broker: Broker, session: Session, handler: BrokerProtocolHandler) -> None:
    await broker._client_message_loop(session, handler)


def entered_connected(session: Session) -> None:
    session._on_enter_connected()


def entered_disconnected(session: Session) -> None:
    session._on_enter_disconnected()


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
