"""MQTT 3.1.1 packets to bytes and back: the one codec every MQTT speaker in chatmq uses.

Sans-IO, in the spirit of h11 and aiomqtt's codec: no sockets, no asyncio, no clock. Whoever owns
the connection feeds the bytes it read into a ``Decoder`` and takes whole packets out; a packet
object's ``encode()`` (or ``encode_publish`` on the hot path) gives the bytes to write. The broker
(its reader and delivery writer), the health probes, the benchmarks' lean client and the tests'
raw clients all frame and parse through this module, so the remaining-length varint and each
packet's layout are written once.

Two layers:

- framing: ``Decoder.feed(data)`` then ``Decoder.next_frame()`` -> ``(first byte, body)`` or None
  until a whole packet is buffered; ``encode_frame(first, body)`` the other way. The decoder checks
  the remaining length (at most four bytes, MQTT 3.1.1 section 2.2.3) and an optional maximum packet
  size as soon as the fixed header is complete, before the body is buffered.
- packets: ``decode(first, body)`` -> one of the dataclasses below, validated as the standard asks
  (fixed-header flags [MQTT-2.2.2-2], packet ids [MQTT-2.3.1-1], UTF-8 strings without U+0000
  [MQTT-1.5.3-1/2], no wildcard in a PUBLISH topic [MQTT-3.3.2-2], the CONNECT flag rules of
  section 3.1.2, exact lengths); ``packet.encode()`` -> bytes.

Bytes that break the standard raise ``MalformedPacket``: the connection must then be closed
without a reply [MQTT-4.8.0-1]. A fixed header that announces more than the decoder's limit raises
``PacketTooLarge``; a CONNECT of another protocol level raises ``UnsupportedProtocolLevel`` (the
broker answers it with CONNACK 1 [MQTT-3.1.2-2]). All three are ``CodecError``.

Decoding checks what the standard says about the bytes, not what a broker allows: topic filter
syntax (answered per filter in a SUBACK), ``$`` topics, an empty client id with a persistent
session (CONNACK 2) and authentication are the caller's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "CONNACK_ACCEPTED", "CONNACK_BAD_CREDENTIALS", "CONNACK_IDENTIFIER_REJECTED", "CONNACK_NOT_AUTHORIZED",
    "CONNACK_SERVER_UNAVAILABLE", "CONNACK_UNACCEPTABLE_PROTOCOL_VERSION", "MAX_REMAINING_LENGTH",
    "PROTOCOL_LEVEL", "SUBACK_FAILURE", "CodecError", "Connack", "Connect", "Decoder", "Disconnect",
    "MalformedPacket", "Packet", "PacketTooLarge", "PacketType", "Pingreq", "Pingresp", "Puback", "Pubcomp",
    "Publish", "Pubrec", "Pubrel", "Suback", "Subscribe", "Unsuback", "Unsubscribe", "UnsupportedProtocolLevel",
    "Will", "decode", "decode_publish", "decode_string", "encode_frame", "encode_publish", "encode_remaining_length",
    "encode_string", "frame_size",
]  # fmt: skip


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


PROTOCOL_LEVEL: Final = 4  # MQTT 3.1.1
MAX_REMAINING_LENGTH: Final = 268_435_455  # four varint bytes (section 2.2.3)
SUBACK_FAILURE: Final = 0x80

CONNACK_ACCEPTED: Final = 0
CONNACK_UNACCEPTABLE_PROTOCOL_VERSION: Final = 1
CONNACK_IDENTIFIER_REJECTED: Final = 2
CONNACK_SERVER_UNAVAILABLE: Final = 3
CONNACK_BAD_CREDENTIALS: Final = 4
CONNACK_NOT_AUTHORIZED: Final = 5

_PUBLISH: Final = 3
# The fixed-header flags each packet type but PUBLISH must carry [MQTT-2.2.2-1].
_FLAGS: Final = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0}
_PROTOCOL_NAMES: Final = {b"MQTT": 4, b"MQIsdp": 3}  # the name each level uses
_LENGTHS: Final = tuple(bytes((n,)) for n in range(128))  # one-byte remaining lengths, prebuilt


class CodecError(ValueError):
    """Bytes this codec cannot turn into an MQTT 3.1.1 packet."""


class MalformedPacket(CodecError):
    """The bytes break MQTT 3.1.1: close the connection without a reply [MQTT-4.8.0-1]."""


class PacketTooLarge(CodecError):
    """A fixed header announced a packet over the decoder's ``max_packet_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"packet of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class UnsupportedProtocolLevel(CodecError):
    """A CONNECT of another MQTT version (5, 3.1): answer CONNACK 1 and close [MQTT-3.1.2-2]."""

    def __init__(self, level: int) -> None:
        super().__init__(f"MQTT protocol level {level} (only 3.1.1, level 4, is supported)")
        self.level = level


# ---- framing ----------------------------------------------------------------------------------


def encode_remaining_length(length: int) -> bytes:
    """The variable-length "remaining length" of a fixed header (section 2.2.3)."""
    if 0 <= length < 128:
        return _LENGTHS[length]
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} outside 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        if not length:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def publish_size(topic: str, payload_length: int, qos: int) -> int:
    """The bytes of a PUBLISH on the wire: fixed header (1 byte and its remaining length), the topic
    with its 2-byte length, the packet id (QoS 1 and 2), the payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_length
    return 1 + len(encode_remaining_length(remaining)) + remaining


def encode_frame(first: int, body: bytes | bytearray = b"") -> bytes:
    """A whole packet: its first byte (type and flags), the remaining length, the body."""
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def frame_size(body_length: int) -> int:
    """The bytes on the wire of a packet whose body has ``body_length`` bytes."""
    return 1 + len(encode_remaining_length(body_length)) + body_length


class Decoder:
    """Bytes in, frames (or packets) out, for one direction of one connection.

    ``feed`` what was read, then call ``next_frame`` (or ``next_packet``) until it returns None.
    Bytes that cannot start a valid frame raise ``MalformedPacket`` and the decoder should be
    dropped with its connection. ``wanted`` is how many more bytes can be read without reading
    past the next packet: a transport that can only read exactly (a WebSocket adapter, or a CONNECT
    that must not consume what follows it) reads that many.
    """

    __slots__ = ("_buffer", "_chunked", "_chunks", "_need", "_pos", "max_packet_size")

    def __init__(self, max_packet_size: int | None = None) -> None:
        self.max_packet_size = max_packet_size
        self._buffer = b""
        self._pos = 0
        self._chunks: list[bytes] = []  # fed while a long packet is incomplete, joined once it is whole
        self._chunked = 0
        self._need = 2  # bytes from _pos the next frame needs at least (grows as its header is read)

    def feed(self, data: bytes | bytearray) -> None:
        if not data:
            return
        if self._pos >= len(self._buffer) and not self._chunks:
            self._buffer, self._pos = bytes(data), 0  # the common case: no copy for bytes
            return
        self._chunks.append(bytes(data))
        self._chunked += len(data)
        if len(self._buffer) - self._pos + self._chunked >= self._need:
            self._buffer = b"".join((self._buffer[self._pos :], *self._chunks))
            self._pos = 0
            self._chunks.clear()
            self._chunked = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet taken as frames."""
        return len(self._buffer) - self._pos + self._chunked

    @property
    def wanted(self) -> int:
        """At least this many more bytes are needed before ``next_frame`` can return a frame."""
        return max(1, self._need - self.buffered)

    def has_frame(self) -> bool:
        """A whole frame is buffered: ``next_frame`` would return it (or raise)."""
        buffer, pos = self._buffer, self._pos
        size = len(buffer)
        if size - pos < 2:
            return False
        if buffer[pos + 1] < 0x80:
            return size - pos >= 2 + buffer[pos + 1]
        length, shift, start = 0, 0, pos + 1
        while start < size and start - pos <= 4:
            byte = buffer[start]
            start += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                return size >= start + length
            shift += 7
        return start - pos > 4  # a fifth length byte: next_frame raises

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole packet as (first byte, body); None until one is buffered."""
        buffer, pos = self._buffer, self._pos
        size = len(buffer)
        if size - pos < 2:
            self._need = 2
            return None
        length = buffer[pos + 1]
        start = pos + 2
        if length >= 0x80:  # a longer remaining length (section 2.2.3)
            length &= 0x7F
            shift = 7
            while True:
                if start >= size:
                    self._need = start - pos + 1
                    return None
                byte = buffer[start]
                start += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                if shift == 21:
                    raise MalformedPacket("remaining length longer than four bytes")
                shift += 7
        end = start + length
        limit = self.max_packet_size
        if limit is not None and end - pos > limit:
            raise PacketTooLarge(end - pos, limit)
        if end > size:
            self._need = end - pos
            return None
        self._pos = end
        self._need = 2
        return buffer[pos], buffer[start:end]

    def next_packet(self) -> Packet | None:
        """The next whole packet, decoded; None until one is buffered."""
        frame = self.next_frame()
        return None if frame is None else decode(*frame)


# ---- fields -----------------------------------------------------------------------------------


def encode_string(value: str | bytes) -> bytes:
    """A length-prefixed field: a UTF-8 string (section 1.5.3), or binary data given as bytes."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError(f"field of {len(raw)} bytes: at most 65535 fit")
    return len(raw).to_bytes(2, "big") + raw


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode()  # strict: surrogates (U+D800..U+DFFF) are refused too [MQTT-1.5.3-1]
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} holds U+0000")  # [MQTT-1.5.3-2]
    return text


def _field(body: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The length-prefixed field at ``pos`` and the position after it."""
    end = pos + 2
    if end > len(body):
        raise MalformedPacket(f"{what} missing")
    end += int.from_bytes(body[pos:end], "big")
    if end > len(body):
        raise MalformedPacket(f"{what} longer than the packet")
    return body[pos + 2 : end], end


def decode_string(body: bytes, pos: int, what: str = "string") -> tuple[str, int]:
    """The UTF-8 string at ``pos`` and the position after it; ``MalformedPacket`` if it is not one."""
    raw, end = _field(body, pos, what)
    return _text(raw, what), end


def _packet_id(body: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(body):
        raise MalformedPacket(f"{what} without a packet id")
    packet_id = int.from_bytes(body[pos : pos + 2], "big")
    if not packet_id:
        raise MalformedPacket(f"{what} with packet id 0")  # [MQTT-2.3.1-1]
    return packet_id


# ---- packets ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Will:
    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class Connect:
    client_id: str
    clean_session: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None

    def encode(self) -> bytes:
        will = self.will
        flags = (0x02 if self.clean_session else 0) | (0x80 if self.username is not None else 0)
        flags |= 0x40 if self.password is not None else 0
        payload = encode_string(self.client_id)
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            payload += encode_string(will.topic) + encode_string(will.message)
        if self.username is not None:
            payload += encode_string(self.username)
        if self.password is not None:
            payload += encode_string(self.password)
        header = b"\x00\x04MQTT" + bytes((PROTOCOL_LEVEL, flags)) + self.keepalive.to_bytes(2, "big")
        return encode_frame(0x10, header + payload)


@dataclass(slots=True)
class Connack:
    return_code: int = CONNACK_ACCEPTED
    session_present: bool = False

    def encode(self) -> bytes:
        return bytes((0x20, 2, int(self.session_present), self.return_code))


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    packet_id: int | None = None
    dup: bool = False

    def encode(self) -> bytes:
        return encode_publish(self.topic, self.payload, self.qos, self.packet_id, self.retain, self.dup)


@dataclass(slots=True)
class Puback:
    packet_id: int

    def encode(self) -> bytes:
        return b"\x40\x02" + self.packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Pubrec:
    packet_id: int

    def encode(self) -> bytes:
        return b"\x50\x02" + self.packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Pubrel:
    packet_id: int

    def encode(self) -> bytes:
        return b"\x62\x02" + self.packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Pubcomp:
    packet_id: int

    def encode(self) -> bytes:
        return b"\x70\x02" + self.packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    topics: list[tuple[str, int]]  # (filter, requested QoS)

    def encode(self) -> bytes:
        body = self.packet_id.to_bytes(2, "big")
        body += b"".join(encode_string(topic) + bytes((qos,)) for topic, qos in self.topics)
        return encode_frame(0x82, body)


@dataclass(slots=True)
class Suback:
    packet_id: int
    return_codes: list[int]  # granted QoS, or SUBACK_FAILURE

    def encode(self) -> bytes:
        return encode_frame(0x90, self.packet_id.to_bytes(2, "big") + bytes(self.return_codes))


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topics: list[str]

    def encode(self) -> bytes:
        body = self.packet_id.to_bytes(2, "big") + b"".join(encode_string(topic) for topic in self.topics)
        return encode_frame(0xA2, body)


@dataclass(slots=True)
class Unsuback:
    packet_id: int

    def encode(self) -> bytes:
        return b"\xb0\x02" + self.packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Pingreq:
    def encode(self) -> bytes:
        return b"\xc0\x00"


@dataclass(slots=True)
class Pingresp:
    def encode(self) -> bytes:
        return b"\xd0\x00"


@dataclass(slots=True)
class Disconnect:
    def encode(self) -> bytes:
        return b"\xe0\x00"


Packet = (
    Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback | Unsubscribe | Unsuback
    | Pingreq | Pingresp | Disconnect
)  # fmt: skip


def encode_publish(
    topic: str, payload: bytes | bytearray, qos: int = 0, packet_id: int | None = None, retain: bool = False,
    dup: bool = False,
) -> bytes:  # fmt: skip
    """One PUBLISH packet (section 3.3): the broker writes every delivery through this."""
    name = topic.encode()
    size = len(name)
    if qos:
        variable = size.to_bytes(2, "big") + name + (packet_id or 0).to_bytes(2, "big")
        size += 4
    else:
        variable = size.to_bytes(2, "big") + name
        size += 2
    size += len(payload)
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    if size < 128:
        return bytes((first, size)) + variable + payload
    return bytes((first,)) + encode_remaining_length(size) + variable + payload


# ---- decoding ---------------------------------------------------------------------------------


def decode_publish(first: int, body: bytes) -> Publish:
    """A PUBLISH frame (the broker's hot path: every message it relays comes through here)."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    if len(body) < 2:
        raise MalformedPacket("PUBLISH without a topic")
    end = 2 + int.from_bytes(body[:2], "big")
    raw_topic = body[2:end]
    if qos:
        if len(body) < end + 2:
            raise MalformedPacket("PUBLISH shorter than its topic and packet id")
        packet_id: int | None = int.from_bytes(body[end : end + 2], "big")
        if not packet_id:
            raise MalformedPacket("PUBLISH with packet id 0")  # [MQTT-2.3.1-1]
        payload = body[end + 2 :]
    else:
        if len(body) < end:
            raise MalformedPacket("PUBLISH shorter than its topic")
        packet_id, payload = None, body[end:]
    if not raw_topic or b"+" in raw_topic or b"#" in raw_topic:
        raise MalformedPacket(f"PUBLISH to an invalid topic {raw_topic!r}")  # [MQTT-4.7.3-1], [MQTT-3.3.2-2]
    if raw_topic.isascii():
        topic = raw_topic.decode()
        if "\x00" in topic:
            raise MalformedPacket("PUBLISH topic holds U+0000")
    else:
        topic = _text(raw_topic, "PUBLISH topic")
    return Publish(topic, payload, qos, bool(first & 1), packet_id, bool(first & 8))


def _decode_connect(body: bytes) -> Connect:
    raw_name, pos = _field(body, 0, "protocol name")
    level = _PROTOCOL_NAMES.get(raw_name)
    if level is None:
        raise MalformedPacket(f"protocol name {raw_name!r}")  # [MQTT-3.1.2-1]
    if pos + 4 > len(body):
        raise MalformedPacket("CONNECT shorter than its variable header")
    if body[pos] != PROTOCOL_LEVEL:
        raise UnsupportedProtocolLevel(body[pos])
    if raw_name != b"MQTT":
        raise MalformedPacket(f"protocol name {raw_name!r} with level {PROTOCOL_LEVEL}")
    flags = body[pos + 1]
    keepalive = int.from_bytes(body[pos + 2 : pos + 4], "big")
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    will_qos = (flags >> 3) & 3
    if flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will QoS 3")  # [MQTT-3.1.2-14]
    elif flags & 0x38:
        raise MalformedPacket("will QoS or will retain without the will flag")  # [MQTT-3.1.2-11/13/15]
    if flags & 0x40 and not flags & 0x80:
        raise MalformedPacket("password flag without the user name flag")  # [MQTT-3.1.2-22]
    client_id, pos = decode_string(body, pos + 4, "client id")
    will = None
    if flags & 0x04:
        topic, pos = decode_string(body, pos, "will topic")
        message, pos = _field(body, pos, "will message")
        will = Will(topic, message, will_qos, bool(flags & 0x20))
    username = password = None
    if flags & 0x80:
        username, pos = decode_string(body, pos, "user name")
    if flags & 0x40:
        password, pos = _field(body, pos, "password")
    if pos != len(body):
        raise MalformedPacket(f"{len(body) - pos} bytes after the CONNECT payload")
    return Connect(client_id, bool(flags & 0x02), keepalive, username, password, will)


def _decode_connack(body: bytes) -> Connack:
    if len(body) != 2 or body[0] > 1:
        raise MalformedPacket(f"CONNACK body {body!r}")
    return Connack(body[1], bool(body[0]))


def _only_packet_id(body: bytes, what: str) -> int:
    if len(body) != 2:
        raise MalformedPacket(f"{what} with a remaining length of {len(body)}, not 2")
    return _packet_id(body, 0, what)


def _decode_subscribe(body: bytes) -> Subscribe:
    packet_id = _packet_id(body, 0, "SUBSCRIBE")
    topics, pos = [], 2
    while pos < len(body):
        topic, pos = decode_string(body, pos, "SUBSCRIBE topic filter")
        if pos >= len(body):
            raise MalformedPacket("SUBSCRIBE topic filter without its QoS")
        qos = body[pos]
        if qos > 2:
            raise MalformedPacket(f"SUBSCRIBE QoS byte {qos:#x}")  # [MQTT-3.8.3-4]
        topics.append((topic, qos))
        pos += 1
    if not topics:
        raise MalformedPacket("SUBSCRIBE without topics")  # [MQTT-3.8.3-3]
    return Subscribe(packet_id, topics)


def _decode_suback(body: bytes) -> Suback:
    packet_id = _packet_id(body, 0, "SUBACK")
    codes = list(body[2:])
    if not codes or any(code not in (0, 1, 2, SUBACK_FAILURE) for code in codes):
        raise MalformedPacket(f"SUBACK return codes {bytes(codes)!r}")  # [MQTT-3.9.3-2]
    return Suback(packet_id, codes)


def _decode_unsubscribe(body: bytes) -> Unsubscribe:
    packet_id = _packet_id(body, 0, "UNSUBSCRIBE")
    topics, pos = [], 2
    while pos < len(body):
        topic, pos = decode_string(body, pos, "UNSUBSCRIBE topic filter")
        topics.append(topic)
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE without topics")  # [MQTT-3.10.3-2]
    return Unsubscribe(packet_id, topics)


def _empty(body: bytes, packet: Pingreq | Pingresp | Disconnect) -> Pingreq | Pingresp | Disconnect:
    if body:
        raise MalformedPacket(f"{type(packet).__name__.upper()} with a remaining length of {len(body)}, not 0")
    return packet


def decode(first: int, body: bytes) -> Packet:
    """One frame (from ``Decoder.next_frame``) as its packet; ``MalformedPacket`` if it is not valid."""
    kind = first >> 4
    if kind == _PUBLISH:
        return decode_publish(first, body)
    expected = _FLAGS.get(kind)
    if expected is None:
        raise MalformedPacket(f"reserved packet type {kind}")
    if first & 0x0F != expected:
        raise MalformedPacket(f"{PacketType(kind).name} with fixed-header flags {first & 0x0F:#x}")  # [MQTT-2.2.2-2]
    if kind == PacketType.PUBACK:
        return Puback(_only_packet_id(body, "PUBACK"))
    if kind == PacketType.PUBREC:
        return Pubrec(_only_packet_id(body, "PUBREC"))
    if kind == PacketType.PUBREL:
        return Pubrel(_only_packet_id(body, "PUBREL"))
    if kind == PacketType.PUBCOMP:
        return Pubcomp(_only_packet_id(body, "PUBCOMP"))
    if kind == PacketType.SUBSCRIBE:
        return _decode_subscribe(body)
    if kind == PacketType.UNSUBSCRIBE:
        return _decode_unsubscribe(body)
    if kind == PacketType.PINGREQ:
        return _empty(body, Pingreq())
    if kind == PacketType.PINGRESP:
        return _empty(body, Pingresp())
    if kind == PacketType.DISCONNECT:
        return _empty(body, Disconnect())
    if kind == PacketType.CONNECT:
        return _decode_connect(body)
    if kind == PacketType.CONNACK:
        return _decode_connack(body)
    if kind == PacketType.SUBACK:
        return _decode_suback(body)
    return Unsuback(_only_packet_id(body, "UNSUBACK"))
