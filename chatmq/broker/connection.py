"""A connection's first packet: the CONNECT, read through chatmq's codec and made into a session.

(The packets after it are read by chatmq/broker/reader.py.)"""

from __future__ import annotations

import asyncio
import logging

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import MQTTError, NoDataError

from chatmq.broker.amqtt_seam import AmqttSession
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

KEEPALIVE_GRACE = 1.5  # MQTT-3.1.2-24: disconnect after one and a half keepalive periods of silence


async def _refuse(writer: WriterAdapter, code: int) -> None:
    writer.write(Connack(code).encode())
    await writer.drain()
    await writer.close()


async def read_connect(reader: ReaderAdapter, writer: WriterAdapter, max_packet_bytes: int | None) -> AmqttSession:
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
    return session_from_connect(connect, writer)


def session_from_connect(connect: Connect, writer: WriterAdapter) -> AmqttSession:
    """The session of a new connection, from its CONNECT as chatmq's codec decoded it, with the
    fields amqtt's own CONNECT handling fills (the password as amqtt gives it: text, or the repr of
    bytes that are not UTF-8)."""
    session = AmqttSession()
    session.client_id = connect.client_id
    session.clean_session = connect.clean_session
    will = connect.will
    session.will_flag = will is not None
    if will is not None:
        session.will_topic, session.will_message = will.topic, will.message
        session.will_qos, session.will_retain = will.qos, will.retain
    else:
        session.will_qos, session.will_retain = 0, False
    session.username = connect.username
    if connect.password is not None:
        try:
            session.password = connect.password.decode()
        except UnicodeDecodeError:
            session.password = str(connect.password)
    peer = writer.get_peer_info()
    if peer is not None:
        session.remote_address, session.remote_port = peer
    session.ssl_object = writer.get_ssl_info()
    session.keep_alive = connect.keepalive
    return session
