"""chatmq's protocol handler: amqtt's BrokerProtocolHandler with its defects fixed.

The packet reader after CONNECT is ``chatmq.broker.reader.PacketReader``; this module covers CONNECT,
keepalive expiry, delivery QoS and redelivery."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.manager import PluginManager
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage, Session

from chatmq.broker import amqtt_seam
from chatmq.broker.reader import PacketReader
from chatmq.broker.session import SmallQueue, session_from_connect
from chatmq.core.mqtt.codec import (
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_UNACCEPTABLE_PROTOCOL_VERSION,
    Connack,
    Connect,
    Decoder,
    MalformedPacket,
    PacketType,
    UnsupportedProtocolLevel,
    decode,
)

log = logging.getLogger(__name__)


async def _refuse(writer: WriterAdapter, code: int) -> None:
    writer.write(Connack(code).encode())
    await writer.drain()
    await writer.close()

KEEPALIVE_GRACE = 1.5  # MQTT-3.1.2-24: disconnect after one and a half keepalive periods of silence


class Published(bytes):
    """A payload that remembers the QoS it was published with.

    amqtt 0.12 defect: routing sends every message at the subscription's QoS, upgrading QoS 0
    publishes (MQTT-3.8.4-6 says min(publish QoS, granted QoS)). The routing code passes the payload
    through untouched, so tagging it lets ``ConnectionHandler.mqtt_publish`` and the offline queue apply
    the minimum without changing routing.
    """

    qos: int

    def __new__(cls, data: bytes | bytearray, qos: int) -> Published:
        made = super().__new__(cls, data)
        made.qos = qos
        return made


def effective_qos(data: bytes | bytearray, granted: int | None) -> int | None:
    published = getattr(data, "qos", None)
    if published is None or granted is None:
        return granted
    return min(published, granted)


class ConnectionHandler(PacketReader, BrokerProtocolHandler):
    def __init__(
        self,
        plugins_manager: PluginManager[Any],
        session: Session | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(plugins_manager, session, loop)
        amqtt_seam.use_queues(self, SmallQueue)  # ~3 KiB less per connection (chatmq/broker/session.py)

    @classmethod
    async def init_from_connect(
        cls,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        plugins_manager: PluginManager[Any],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_packet_bytes: int | None = None,
    ) -> tuple[BrokerProtocolHandler, Session]:
        """The first packet is read whole through the codec (exactly its own bytes: what follows is
        the inline reader's), checked, and made into the connection's session here (amqtt's own
        CONNECT parser is not used).

        amqtt 0.12 defects: an MQTT 5 (or 3.1) CONNECT got no answer at all (MQTT-3.1.2-2 wants
        CONNACK 0x01 "unacceptable protocol version"); garbage instead of a CONNECT, and a CONNECT
        that breaks the standard (flags, UTF-8, missing fields: MQTT-3.1.2-3/11/13/14/22,
        MQTT-3.1.3-4/11), were read on or answered; they now close the connection without a reply
        [MQTT-4.8.0-1]. A packet over ``max_packet_bytes`` raises the codec's ``PacketTooLarge``.
        As in amqtt, an empty client id with clean_session=0 is refused with CONNACK 0x02 [MQTT-3.1.3-8]."""
        decoder = Decoder(max_packet_bytes)
        while (frame := decoder.next_frame()) is None:
            try:
                data = await reader.read(decoder.wanted)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                raise NoDataError("connection closed before CONNECT")
            decoder.feed(data)
        first, body = frame
        try:
            if first >> 4 != PacketType.CONNECT:  # MQTT-3.1.0-1
                raise MalformedPacket(f"first packet is of type {first >> 4}, not CONNECT")
            connect = decode(first, body)
        except UnsupportedProtocolLevel as refused:
            log.warning("refused CONNECT: %s", refused)
            await _refuse(writer, CONNACK_UNACCEPTABLE_PROTOCOL_VERSION)
            raise MQTTError(f"unsupported MQTT protocol level {refused.level}") from None
        except MalformedPacket as malformed:
            await writer.close()
            raise MQTTError(f"malformed CONNECT: {malformed}") from None
        assert isinstance(connect, Connect)
        if not connect.client_id and not connect.clean_session:
            await _refuse(writer, CONNACK_IDENTIFIER_REJECTED)
            raise MQTTError("no client id with clean_session=0 [MQTT-3.1.3-8]")
        handler = cls(plugins_manager, loop=loop)
        handler.max_packet_bytes = max_packet_bytes
        return handler, session_from_connect(connect, writer)

    def handle_read_timeout(self) -> None:
        """amqtt 0.12 defect (upstream issue #308): the stock handler ignores the keepalive read
        timeout, so a silently dead client stays connected forever and its will is never sent.
        Closing the connection here goes through the broker's abnormal-disconnect path (will)."""
        session = self.session
        if session is None or not amqtt_seam.disconnect_pending(self):
            return
        log.info("keepalive expired: client_id=%r silent %.1f s, disconnecting", session.client_id, session.keep_alive)
        self._keepalive_close = asyncio.ensure_future(self.handle_connection_closed())

    async def _retry_deliveries(self) -> None:
        """Nothing here: the broker replays unacknowledged deliveries itself once the connection is
        up (``RoutingMixin._replay``), pipelined and ahead of anything routed after the reconnect.
        amqtt's version awaited each PUBACK (5 s timeout each) in tasks nobody retrieved."""

    async def mqtt_publish(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> OutgoingApplicationMessage:
        return await super().mqtt_publish(topic, data, effective_qos(data, qos), retain, ack_timeout)

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        session = self.session
        try:
            await super()._handle_qos1_message_flow(app_message)
        except BaseException:
            if app_message.direction == OUTGOING and app_message.puback_packet is None:
                self._keep_inflight(session, app_message)
            raise

    async def _handle_qos2_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        session = self.session
        try:
            await super()._handle_qos2_message_flow(app_message)
        except BaseException:
            if app_message.direction == OUTGOING and app_message.pubcomp_packet is None:
                self._keep_inflight(session, app_message)
            raise

    @staticmethod
    def _keep_inflight(session: Session | None, app_message: Any) -> None:
        """amqtt 0.12 defect: an unacknowledged outgoing QoS 1/2 message is dropped from the
        session's in-flight set when the connection goes away, so a persistent session never gets
        it again (MQTT-4.4.0-1 wants it resent, with DUP, on reconnect). Put it back."""
        if session is None or session.clean_session or app_message.packet_id is None:
            return
        session.inflight_out[app_message.packet_id] = app_message
