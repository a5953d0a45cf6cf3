"""The broker's inbound path after CONNECT: one reader per connection that parses and routes inline.

amqtt 0.12 defect (the relay ceiling): every received packet costs a ``wait_for`` task (keepalive),
a second task for its handler, a PUBLISH a trip through ``session.delivered_message_queue`` into
``_client_message_loop`` (an ``asyncio.wait`` over four futures and a new future per message),
one task per topic plugin for the PUBLISH access check and a hop through the global broadcast
queue. With that, amqtt relayed about a fifth of what Mosquitto does on the same machine.

``InlineReader._reader_loop`` replaces the stock loop once a broker has attached an ``Inbound``:

- packets are framed from the transport directly (one read for the type, the length bytes, one for
  the body) and the maximum packet size is checked on the fixed header (the ``PacketSizeGuard``
  only covers the CONNECT phase);
- PUBLISH at QoS 0/1 is parsed by hand and routed inline, in the reader's own task, so per-publisher
  order is arrival order; at QoS 1 the PUBACK is written after routing returned, i.e. once every
  matching subscriber has the message in its outbox or offline queue (never before);
- PUBACK, PINGREQ and DISCONNECT are handled inline; SUBSCRIBE and UNSUBSCRIBE too, through the
  broker, so a PUBLISH that follows a SUBSCRIBE on one connection is routed after it;
- keepalive is a single timer per connection that compares the time of the last packet, not a
  timeout task per read;
- QoS 2 and its PUBREC/PUBREL/PUBCOMP handshake keep amqtt's own (task based) flow;
- a malformed packet closes the connection as MQTT 3.1.1 requires (stock amqtt logged and kept
  reading): reserved or wrong fixed-header flags [MQTT-2.2.2-2], QoS 3 [MQTT-3.3.1-4], a topic that
  is not UTF-8 or holds NUL [MQTT-1.5.3-1/2], wildcards in a PUBLISH topic [MQTT-3.3.2-2], packet id 0
  [MQTT-2.3.1-1], a SUBSCRIBE without topics [MQTT-3.8.3-3], a second CONNECT [MQTT-3.1.0-2].
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from amqtt.adapters import BufferReader, StreamReaderAdapter
from amqtt.mqtt import packet_class
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import Subscription, UnSubscription
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import IncomingApplicationMessage, Session

from broker.limits import PacketSizeGuard

if TYPE_CHECKING:
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

log = logging.getLogger(__name__)

CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
# Fixed-header flags every packet type but PUBLISH must carry [MQTT-2.2.2-1].
_FLAGS = {PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2, UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0}
_PINGRESP = b"\xd0\x00"


class Malformed(Exception):
    """A protocol violation: the connection is closed without a reply [MQTT-4.8.0-1]."""


class Inbound(Protocol):
    """What the reader hands to the broker."""

    async def inbound_publish(
        self, session: Session, handler: BrokerProtocolHandler, message: IncomingApplicationMessage
    ) -> bool: ...

    async def inbound_subscribe(
        self, session: Session, handler: BrokerProtocolHandler, subscription: Subscription
    ) -> None: ...

    async def inbound_unsubscribe(
        self, session: Session, handler: BrokerProtocolHandler, unsubscription: UnSubscription
    ) -> None: ...


def parse_publish(flags: int, body: bytes) -> IncomingApplicationMessage:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise Malformed("PUBLISH with QoS 3")
    if len(body) < 2:
        raise Malformed("PUBLISH without a topic")
    end = 2 + int.from_bytes(body[:2], "big")
    if qos:
        if len(body) < end + 2:
            raise Malformed("PUBLISH shorter than its topic and packet id")
        packet_id: int | None = int.from_bytes(body[end : end + 2], "big")
        if not packet_id:
            raise Malformed("PUBLISH with packet id 0")
        payload = body[end + 2 :]
    else:
        if len(body) < end:
            raise Malformed("PUBLISH shorter than its topic")
        packet_id, payload = None, body[end:]
    raw_topic = body[2:end]
    if not raw_topic or b"\x00" in raw_topic or b"+" in raw_topic or b"#" in raw_topic:
        raise Malformed(f"PUBLISH to an invalid topic {raw_topic!r}")
    try:
        topic = raw_topic.decode()
    except UnicodeDecodeError:
        raise Malformed("PUBLISH topic is not UTF-8") from None
    return IncomingApplicationMessage(packet_id, topic, qos, payload, bool(flags & 1))


class InlineReader:
    """Mixin for ``BrokerProtocolHandler``: see the module docstring."""

    inbound: Inbound | None = None
    _last_read: float = 0.0
    _watchdog: asyncio.TimerHandle | None = None
    _qos2_flows: set[asyncio.Future[None]]
    _stream: asyncio.StreamReader | None = None
    _replies: bytearray

    async def _reader_loop(self) -> None:
        inbound = self.inbound
        if inbound is None:
            await super()._reader_loop()  # type: ignore[misc]
            return
        handler: Any = self
        session: Session = handler.session
        source = handler.reader
        limit: int | None = None
        if isinstance(source, PacketSizeGuard):
            limit, source = source.limit, source.inner
        self._stream = source._reader if isinstance(source, StreamReaderAdapter) else None
        read = self._stream.readexactly if self._stream is not None else source.read
        self._replies = bytearray()
        peer = f"client_id={session.client_id!r}"
        self._start_watchdog(session.keep_alive)
        self._qos2_flows = set()
        handler._reader_ready.set()
        try:
            while True:
                first = (await read(1))[0]
                length, shift = 0, 0
                for _ in range(4):
                    byte = (await read(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                else:
                    raise Malformed("remaining length longer than four bytes")
                if limit is not None and length + shift // 7 + 1 > limit:
                    total = length + shift // 7 + 1
                    log.warning("closing %s: packet of %d bytes exceeds max_packet_bytes=%d", peer, total, limit)
                    break
                body = await read(length) if length else b""
                self._last_read = time.monotonic()
                await self._dispatch(inbound, session, first, body)
                if self._replies:
                    await self._flush_replies()
        except Malformed as error:
            log.warning("closing %s: malformed packet (%s)", peer, error)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass  # the peer went away (IndexError: an empty read from a closed WebSocket)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("reader of %s failed; closing the connection", peer)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            for flow in self._qos2_flows:
                flow.cancel()
        await handler.handle_connection_closed()
        handler._reader_stopped.set()
        await handler.stop()

    async def _dispatch(self, inbound: Inbound, session: Session, first: int, body: bytes) -> None:
        handler: Any = self
        kind, flags = first >> 4, first & 0x0F
        if kind == PUBLISH:
            message = parse_publish(flags, body)
            if message.qos == 2:  # amqtt's QoS 2 flow waits for PUBREL: it needs its own task
                flow = asyncio.ensure_future(handler._handle_message_flow(message))
                self._qos2_flows.add(flow)
                flow.add_done_callback(self._qos2_flows.discard)
                return
            taken = await inbound.inbound_publish(session, handler, message)
            if message.qos == 1 and taken:  # not taken: no PUBACK, the client resends it later
                self._replies += b"\x40\x02" + message.packet_id.to_bytes(2, "big")
            return
        expected = _FLAGS.get(kind)
        if expected is None:
            raise Malformed(f"unexpected packet type {kind}" if kind != CONNECT else "second CONNECT")
        if flags != expected:
            raise Malformed(f"packet type {kind} with flags {flags:#x}")
        if kind == PUBACK:
            packet_id = int.from_bytes(body[:2], "big")
            waiter = handler._puback_waiters.get(packet_id)
            if waiter is None:  # a routed delivery (broker/routing.py): no future per message
                session.inflight_out.pop(packet_id, None)
            elif not waiter.done():
                waiter.set_result(None)  # amqtt's own flows only test the outcome, not the packet
        elif kind == PINGREQ:
            self._replies += _PINGRESP
        elif kind == SUBSCRIBE:
            packet = await SubscribePacket.from_stream(BufferReader(body), MQTTFixedHeader(kind, flags, len(body)))
            if not packet.payload or not packet.payload.topics:
                raise Malformed("SUBSCRIBE without topics")
            subscription = Subscription(packet.variable_header.packet_id, packet.payload.topics)
            await inbound.inbound_subscribe(session, handler, subscription)
        elif kind == UNSUBSCRIBE:
            header = MQTTFixedHeader(kind, flags, len(body))
            unsubscribe = await UnsubscribePacket.from_stream(BufferReader(body), header)
            if not unsubscribe.payload or not unsubscribe.payload.topics:
                raise Malformed("UNSUBSCRIBE without topics")
            unsubscription = UnSubscription(unsubscribe.variable_header.packet_id, unsubscribe.payload.topics)
            await inbound.inbound_unsubscribe(session, handler, unsubscription)
        elif kind == DISCONNECT:
            await handler.handle_disconnect(DisconnectPacket())
        else:  # PUBREC, PUBREL, PUBCOMP: the QoS 2 handshake, amqtt's waiters
            packet_id = int.from_bytes(body[:2], "big")
            waiters = {PUBREC: handler._pubrec_waiters, PUBREL: handler._pubrel_waiters,
                       PUBCOMP: handler._pubcomp_waiters}[kind]  # fmt: skip
            waiter = waiters.get(packet_id)
            if waiter is not None and not waiter.done():
                header = MQTTFixedHeader(kind, flags, len(body))
                waiter.set_result(await packet_class(header).from_stream(BufferReader(body), fixed_header=header))

    async def _flush_replies(self) -> None:
        """PUBACKs and PINGRESPs are written after their packet was handled, unless the next packet
        is already buffered: a burst of pipelined publishes is then acknowledged with one write
        instead of one syscall each (and a QoS 1 PUBACK still only follows its routing)."""
        replies = self._replies
        stream = self._stream
        if stream is not None:
            buffered = stream._buffer  # asyncio.StreamReader's buffer (private, stable since 3.4)
            if len(buffered) >= 2 and buffered[1] < 0x80 and len(buffered) >= 2 + buffered[1]:
                return  # a complete packet follows: it (or a later one) flushes the replies
        if replies:
            data = bytes(replies)
            replies.clear()
            await self._send(data)

    async def _send(self, packet: bytes) -> None:
        """Under the write lock: amqtt's WebSocket writer loses bytes written during another drain."""
        handler: Any = self
        async with handler._write_lock:
            handler.writer.write(packet)
            await handler.writer.drain()

    # ---- keepalive ----------------------------------------------------------------------------

    def _start_watchdog(self, keepalive: float | None) -> None:
        self._last_read = time.monotonic()
        if keepalive and keepalive > 0:
            self._watchdog = asyncio.get_running_loop().call_later(keepalive, self._check_silence, keepalive)

    def _check_silence(self, keepalive: float) -> None:
        silent = time.monotonic() - self._last_read
        if silent < keepalive:
            self._watchdog = asyncio.get_running_loop().call_later(keepalive - silent, self._check_silence, keepalive)
            return
        self._watchdog = None
        self.handle_read_timeout()  # type: ignore[attr-defined]
