"""The broker's inbound path after CONNECT: one reader per connection that parses and routes inline.

amqtt 0.12 defect (the relay ceiling): every received packet costs a ``wait_for`` task (keepalive),
a second task for its handler, a PUBLISH a trip through ``session.delivered_message_queue`` into
amqtt's ``_client_message_loop`` (an ``asyncio.wait`` over four futures and a new future per message),
one task per topic plugin for the PUBLISH access check and a hop through the global broadcast
queue. With that, amqtt relayed about a fifth of what Mosquitto does on the same machine.

``PacketReader.run`` replaces the stock reader loop (``AmqttConnection`` in the seam calls it):

- bytes are framed and parsed by the sans-IO codec (``chatmq.core.mqtt.codec``): on TCP one read takes
  every packet already buffered, and the maximum packet size is checked on each fixed header,
  before its body is buffered;
- PUBLISH at QoS 0/1 is routed inline, in the reader's own task, so per-publisher
  order is arrival order; at QoS 1 the PUBACK is written after routing returned, i.e. once every
  matching subscriber has the message in its outbox or offline queue (never before);
- PUBACK, PINGREQ and DISCONNECT are handled inline; SUBSCRIBE and UNSUBSCRIBE too, through the
  broker, so a PUBLISH that follows a SUBSCRIBE on one connection is routed after it;
- keepalive is a single timer per connection that compares the time of the last packet, not a
  timeout task per read; after 1.5 keepalive periods of silence the connection is closed as an
  abnormal end (its will is published; amqtt 0.12 ignored the keepalive, upstream issue #308);
- QoS 2 without a task either: a client's QoS 2 PUBLISH is kept in ``session.inflight_in`` and
  answered PUBREC, and routed once when its PUBREL comes (then PUBCOMP); a QoS 2 delivery's PUBREC
  is answered PUBREL and its PUBCOMP ends it (chatmq/broker/deliveries.py writes it pipelined);
- a malformed packet (the codec's ``MalformedPacket``: wrong fixed-header flags, QoS 3, bad UTF-8,
  wildcards in a PUBLISH topic, packet id 0, wrong lengths, ...) closes the connection as MQTT 3.1.1
  requires (stock amqtt logged and kept reading), and so does a ``ProtocolViolation``: a second
  CONNECT [MQTT-3.1.0-2], or an acknowledgement of the wrong kind (PUBACK for a QoS 2 delivery,
  PUBREC or PUBCOMP for a QoS 1 one, PUBCOMP before PUBREC).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session

from chatmq.broker import amqtt_seam
from chatmq.core.mqtt.codec import (
    Decoder,
    Disconnect,
    MalformedPacket,
    PacketTooLarge,
    PacketType,
    Pingreq,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
    decode,
    decode_publish,
)

if TYPE_CHECKING:
    from chatmq.broker.amqtt_seam import AmqttConnection

log = logging.getLogger(__name__)

_PUBLISH = PacketType.PUBLISH
_READ_SIZE = 64 * 1024  # one read takes every packet the transport has buffered, up to this
_PINGRESP = b"\xd0\x00"


class ProtocolViolation(Exception):
    """A valid packet at the wrong time (a second CONNECT, an acknowledgement of the wrong kind):
    the connection is closed without a reply, as for a malformed one [MQTT-4.8.0-1]."""


class Inbound(Protocol):
    """What the reader hands to the broker."""

    async def publish_from(
        self, session: Session, handler: AmqttConnection, message: IncomingApplicationMessage
    ) -> bool:
        """Route one client publish; False when it was not taken and must not be acknowledged."""
        ...

    async def subscribe_from(self, session: Session, handler: AmqttConnection, packet: Subscribe) -> None: ...

    async def unsubscribe_from(self, session: Session, handler: AmqttConnection, packet: Unsubscribe) -> None: ...


class PacketReader:
    """One connection's packets after CONNECT: see the module docstring."""

    __slots__ = ("_closing", "_last_read", "_replies", "_watchdog", "handler", "inbound",
                 "max_packet_bytes")  # fmt: skip

    def __init__(self, handler: AmqttConnection, inbound: Inbound, max_packet_bytes: int | None) -> None:
        self.handler = handler
        self.inbound = inbound
        self.max_packet_bytes = max_packet_bytes
        self._last_read = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._replies = bytearray()
        self._closing: asyncio.Future[None] | None = None

    async def run(self) -> None:
        inbound = self.inbound
        handler = self.handler
        session = handler.session
        assert session is not None
        source = handler.reader
        # TCP: take whatever is buffered; other transports (WebSocket) read exactly what the codec wants
        stream = amqtt_seam.tcp_stream(source)  # type: ignore[arg-type]
        decoder = Decoder(self.max_packet_bytes)
        peer = f"client_id={session.client_id!r}"
        self._start_watchdog(session.keep_alive)
        amqtt_seam.reader_started(handler)
        try:
            while True:
                frame = decoder.next_frame()
                if frame is None:  # nothing whole is buffered: acknowledge what was handled, then read
                    if self._replies:
                        await self._flush_replies()
                    data = await (stream.read(_READ_SIZE) if stream is not None else
                                  source.read(decoder.wanted))  # type: ignore[union-attr]  # fmt: skip
                    if not data:
                        break
                    self._last_read = time.monotonic()
                    decoder.feed(data)
                    continue
                await self._dispatch(inbound, session, frame[0], frame[1])
        except PacketTooLarge as error:
            log.warning("closing %s: packet of %d bytes exceeds max_packet_bytes=%d", peer, error.size, error.limit)
        except MalformedPacket as error:
            log.warning("closing %s: malformed packet (%s)", peer, error)
        except ProtocolViolation as error:
            log.warning("closing %s: protocol violation (%s)", peer, error)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass  # the peer went away (IndexError: an empty read from a closed WebSocket)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("reader of %s failed; closing the connection", peer)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
        await handler.handle_connection_closed()
        amqtt_seam.reader_stopped(handler)
        await handler.stop()

    async def _dispatch(self, inbound: Inbound, session: Session, first: int, body: bytes) -> None:
        handler = self.handler
        if first >> 4 == _PUBLISH:
            publish = decode_publish(first, body)
            message = IncomingApplicationMessage(
                publish.packet_id, publish.topic, publish.qos, publish.payload, publish.retain
            )
            if publish.qos == 2:  # kept until released (PUBREL), then routed once; a resend replaces it
                session.inflight_in[publish.packet_id] = message  # type: ignore[index]
                self._replies += Pubrec(publish.packet_id).encode()  # type: ignore[arg-type]
                return
            taken = await inbound.publish_from(session, handler, message)
            if publish.qos and taken:  # not taken: no PUBACK, the client resends it later
                self._replies += b"\x40\x02" + publish.packet_id.to_bytes(2, "big")  # type: ignore[union-attr]
            return
        packet = decode(first, body)
        kind = type(packet)
        if kind is Puback:
            packet_id = packet.packet_id  # type: ignore[union-attr]
            delivered = session.inflight_out.get(packet_id)
            if delivered is not None and delivered.qos == 1:  # a routed delivery (chatmq/broker/deliveries.py)
                del session.inflight_out[packet_id]
            elif delivered is not None:
                raise ProtocolViolation(f"PUBACK for the QoS 2 delivery {packet_id}")
        elif kind is Pingreq:
            self._replies += _PINGRESP
        elif kind is Subscribe:
            await inbound.subscribe_from(session, handler, packet)  # type: ignore[arg-type]
        elif kind is Unsubscribe:
            await inbound.unsubscribe_from(session, handler, packet)  # type: ignore[arg-type]
        elif kind is Disconnect:
            await amqtt_seam.clean_disconnect(handler)
        elif kind is Pubrel:  # a client's QoS 2 publish released: routed now, then completed
            packet_id = packet.packet_id  # type: ignore[union-attr]
            released = session.inflight_in.pop(packet_id, None)
            if released is not None:
                await inbound.publish_from(session, handler, released)
            self._replies += Pubcomp(packet_id).encode()
        elif kind is Pubrec:  # a QoS 2 delivery received: release it
            packet_id = packet.packet_id  # type: ignore[union-attr]
            delivered = self._qos2_delivery(session, "PUBREC", packet_id)
            if delivered is not None:
                delivered.pubrec_packet = packet  # type: ignore[assignment]  # replayed as PUBREL from now on
                self._replies += Pubrel(packet_id).encode()
        elif kind is Pubcomp:  # a QoS 2 delivery completed
            packet_id = packet.packet_id  # type: ignore[union-attr]
            delivered = self._qos2_delivery(session, "PUBCOMP", packet_id)
            if delivered is not None:
                if delivered.pubrec_packet is None:
                    raise ProtocolViolation(f"PUBCOMP for the delivery {packet_id} before its PUBREC")
                del session.inflight_out[packet_id]
        else:  # CONNECT again [MQTT-3.1.0-2], or a packet only a broker sends
            raise ProtocolViolation(f"a client sent {type(packet).__name__.upper()} after CONNECT")

    @staticmethod
    def _qos2_delivery(session: Session, kind: str, packet_id: int) -> OutgoingApplicationMessage | None:
        """The QoS 2 delivery a PUBREC or PUBCOMP answers (section 4.3.3); one for a QoS 1 delivery is a
        protocol violation, one for no delivery in flight is ignored."""
        delivered = session.inflight_out.get(packet_id)
        if delivered is not None and delivered.qos == 1:
            raise ProtocolViolation(f"{kind} for the QoS 1 delivery {packet_id}")
        return delivered

    async def _flush_replies(self) -> None:
        """PUBACKs and PINGRESPs are written once no whole packet is buffered any more: a burst of
        pipelined publishes is acknowledged with one write instead of one syscall each (and a QoS 1
        PUBACK still only follows its routing)."""
        data = bytes(self._replies)
        self._replies.clear()
        await self._send(data)

    async def send(self, packet: bytes) -> None:
        """A packet the broker answers with (CONNACK, SUBACK, UNSUBACK): a connection that went away
        ends as amqtt's own writes end it."""
        try:
            await self._send(packet)
        except (ConnectionResetError, BrokenPipeError):
            await self.handler.handle_connection_closed()

    async def _send(self, packet: bytes) -> None:
        """Under the write lock: amqtt's WebSocket writer loses bytes written during another drain."""
        writer = self.handler.writer
        assert writer is not None
        async with amqtt_seam.write_lock(self.handler):
            writer.write(packet)
            await writer.drain()

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
        handler = self.handler
        if handler.session is None or not amqtt_seam.disconnect_pending(handler):
            return
        log.info("keepalive expired: client_id=%r silent %.1f s, disconnecting", handler.session.client_id, keepalive)
        self._closing = asyncio.ensure_future(handler.handle_connection_closed())
