"""The sans-IO MQTT 3.1.1 codec (chatmq/core/mqtt/codec.py): every packet survives encode -> decode,
a stream split at every byte decodes to the same packets, and malformed bytes raise
``MalformedPacket`` (never another exception, never a wrong packet)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmq.core.mqtt import codec
from chatmq.core.mqtt.codec import (
    CodecError,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    MalformedPacket,
    PacketTooLarge,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolLevel,
    Will,
    decode,
    encode_frame,
    encode_remaining_length,
    encode_string,
)

# UTF-8 text the standard allows in a string: no U+0000, no surrogates (hypothesis' text() has none).
texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
topics = texts.filter(lambda t: t != "" and "+" not in t and "#" not in t)
packet_ids = st.integers(1, 0xFFFF)
qos = st.integers(0, 2)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    level = draw(qos)
    return Publish(draw(topics), draw(st.binary(max_size=300)), level, draw(st.booleans()),
                   draw(packet_ids) if level else None, draw(st.booleans()) if level else False)  # fmt: skip


wills = st.builds(Will, topics, st.binary(max_size=50), qos, st.booleans())
@st.composite
def connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | texts)
    password = None if username is None else draw(st.none() | st.binary(max_size=30))  # [MQTT-3.1.2-22]
    return Connect(draw(texts), draw(st.booleans()), draw(st.integers(0, 0xFFFF)), username, password,
                   draw(st.none() | wills))  # fmt: skip


packets = st.one_of(
    connects(),
    st.builds(Connack, st.integers(0, 5), st.booleans()),
    publishes(),
    st.builds(Puback, packet_ids), st.builds(Pubrec, packet_ids), st.builds(Pubrel, packet_ids),
    st.builds(Pubcomp, packet_ids), st.builds(Unsuback, packet_ids),
    st.builds(Subscribe, packet_ids, st.lists(st.tuples(texts, qos), min_size=1, max_size=5)),
    st.builds(Suback, packet_ids, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5)),
    st.builds(Unsubscribe, packet_ids, st.lists(texts, min_size=1, max_size=5)),
    st.just(Pingreq()), st.just(Pingresp()), st.just(Disconnect()),
)  # fmt: skip


def _decode_all(data: bytes, decoder: Decoder | None = None) -> list[codec.Packet]:
    decoder = decoder or Decoder()
    decoder.feed(data)
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


@given(packets)
@settings(max_examples=400)
def test_every_packet_round_trips(packet: codec.Packet) -> None:
    data = packet.encode()
    assert _decode_all(data) == [packet]


@given(st.integers(0, codec.MAX_REMAINING_LENGTH))
@example(127)
@example(128)
@example(16_383)
@example(16_384)
@example(2_097_151)
@example(2_097_152)
def test_remaining_length_round_trips_at_its_minimal_size(length: int) -> None:
    encoded = encode_remaining_length(length)
    assert len(encoded) == 1 + (length >= 128) + (length >= 16_384) + (length >= 2_097_152)
    decoder = Decoder()
    decoder.feed(b"\x30" + encoded)
    if length:
        assert decoder.next_frame() is None  # the body is still missing
        assert decoder.wanted == length
    decoder.feed(b"x" * min(length, 1000))
    assert (decoder.next_frame() is None) == (length > 1000)


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(codec.MAX_REMAINING_LENGTH + 1)
    with pytest.raises(ValueError):
        encode_remaining_length(-1)


@given(st.lists(packets, min_size=1, max_size=6))
@settings(max_examples=60)
def test_a_stream_split_at_every_byte_decodes_the_same(sent: list[codec.Packet]) -> None:
    stream = b"".join(packet.encode() for packet in sent)
    for cut in range(len(stream) + 1):
        decoder = Decoder()
        got = _decode_all(stream[:cut], decoder)
        got += _decode_all(stream[cut:], decoder)
        assert got == sent
        assert decoder.buffered == 0


@given(st.lists(publishes(), min_size=1, max_size=4))
def test_byte_by_byte_with_wanted_never_reads_past_a_packet(sent: list[Publish]) -> None:
    """Reading exactly ``wanted`` bytes at a time (a CONNECT that must not swallow what follows)
    ends each packet exactly at its last byte."""
    stream = b"".join(packet.encode() for packet in sent)
    decoder, got, pos = Decoder(), [], 0
    while pos < len(stream):
        step = decoder.wanted
        decoder.feed(stream[pos : pos + step])
        pos += step
        packet = decoder.next_packet()
        if packet is not None:
            got.append(packet)
            assert pos == sum(len(p.encode()) for p in got)
    assert got == sent


def test_has_frame_follows_next_frame() -> None:
    data = Publish("a/b", b"x" * 300, 1, packet_id=3).encode()
    decoder = Decoder()
    for i, byte in enumerate(data):
        assert not decoder.has_frame()
        decoder.feed(bytes((byte,)))
        if i < len(data) - 1:
            assert decoder.next_frame() is None
    assert decoder.has_frame()
    assert decoder.next_frame() is not None
    assert not decoder.has_frame()


MALFORMED: dict[str, bytes] = {
    "remaining length over four bytes": b"\x30\xff\xff\xff\xff\x7f",
    "reserved packet type 0": b"\x00\x00",
    "reserved packet type 15": b"\xf0\x00",
    "SUBSCRIBE with flags 0": b"\x80\x06\x00\x01\x00\x01a\x00",
    "PUBREL with flags 0": b"\x60\x02\x00\x01",
    "PUBACK with flags 1": b"\x41\x02\x00\x01",
    "PINGREQ with flags": b"\xc1\x00",
    "DISCONNECT with a body": b"\xe0\x01\x00",
    "PINGREQ with a body": b"\xc0\x01\x00",
    "PUBACK too long": b"\x40\x03\x00\x01\x00",
    "PUBACK too short": b"\x40\x01\x00",
    "PUBACK with id 0": b"\x40\x02\x00\x00",
    "PUBREC too long": b"\x50\x03\x00\x01\x00",
    "PUBCOMP too short": b"\x70\x00",
    "PUBLISH QoS 3": b"\x36\x07\x00\x01a\x00\x01hi",
    "PUBLISH without topic": b"\x30\x01\x00",
    "PUBLISH topic longer than the packet": b"\x30\x04\x00\x09ab",
    "PUBLISH QoS 1 without packet id": b"\x32\x03\x00\x01a",
    "PUBLISH packet id 0": b"\x32\x05\x00\x01a\x00\x00",
    "PUBLISH empty topic": b"\x30\x02\x00\x00",
    "PUBLISH wildcard +": b"\x30\x05\x00\x03a/+",
    "PUBLISH wildcard #": b"\x30\x03\x00\x01#",
    "PUBLISH topic not UTF-8": b"\x30\x04\x00\x02\xff\xfe",
    "PUBLISH topic with NUL": b"\x30\x05\x00\x03a\x00b",
    "PUBLISH topic with a surrogate": b"\x30\x05\x00\x03\xed\xa0\x80",
    "SUBSCRIBE without topics": b"\x82\x02\x00\x01",
    "SUBSCRIBE QoS 3": b"\x82\x06\x00\x01\x00\x01a\x03",
    "SUBSCRIBE reserved QoS bits": b"\x82\x06\x00\x01\x00\x01a\x41",
    "SUBSCRIBE filter without QoS": b"\x82\x05\x00\x01\x00\x01a",
    "SUBSCRIBE filter not UTF-8": b"\x82\x06\x00\x01\x00\x01\xff\x00",
    "SUBSCRIBE packet id 0": b"\x82\x06\x00\x00\x00\x01a\x00",
    "UNSUBSCRIBE without topics": b"\xa2\x02\x00\x01",
    "UNSUBSCRIBE filter truncated": b"\xa2\x05\x00\x01\x00\x05a",
    "SUBACK bad code": b"\x90\x03\x00\x01\x03",
    "CONNACK bad flags": b"\x20\x02\x02\x00",
    "CONNACK too long": b"\x20\x03\x00\x00\x00",
    "CONNECT bad protocol name": encode_frame(0x10, encode_string("MQTX") + b"\x04\x02\x00\x3c" + encode_string("c")),
    "CONNECT reserved flag": encode_frame(0x10, encode_string("MQTT") + b"\x04\x03\x00\x3c" + encode_string("c")),
    "CONNECT password without user name": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x42\x00\x3c" + encode_string("c") + encode_string("pw")),
    "CONNECT will QoS without will flag": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x0a\x00\x3c" + encode_string("c")),
    "CONNECT will retain without will flag": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x22\x00\x3c" + encode_string("c")),
    "CONNECT will QoS 3": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x1e\x00\x3c" + encode_string("c") + encode_string("t")
        + encode_string("m")),
    "CONNECT without client id": encode_frame(0x10, encode_string("MQTT") + b"\x04\x02\x00\x3c"),
    "CONNECT client id not UTF-8": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x02\x00\x3c" + b"\x00\x02\xc3\x28"),
    "CONNECT user name flag without user name": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x82\x00\x3c" + encode_string("c")),
    "CONNECT user name not UTF-8": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x82\x00\x3c" + encode_string("c") + b"\x00\x01\xff"),
    "CONNECT bytes after the payload": encode_frame(
        0x10, encode_string("MQTT") + b"\x04\x02\x00\x3c" + encode_string("c") + b"\x00"),
    "CONNECT with flags": encode_frame(0x11, encode_string("MQTT") + b"\x04\x02\x00\x3c" + encode_string("c")),
    "CONNECT truncated variable header": encode_frame(0x10, encode_string("MQTT") + b"\x04\x02"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_raises_one_clear_error(name: str) -> None:
    with pytest.raises(MalformedPacket) as raised:
        _decode_all(MALFORMED[name])
    assert str(raised.value)


@given(packets, st.data())
@settings(max_examples=300)
def test_a_truncated_body_is_malformed_or_a_different_valid_packet(packet: codec.Packet, data: st.DataObject) -> None:
    """A frame whose body was cut short (its remaining length rewritten to match) decodes to a
    valid packet or raises MalformedPacket: nothing else escapes the codec."""
    decoder = Decoder()
    decoder.feed(packet.encode())
    frame = decoder.next_frame()
    assert frame is not None
    first, body = frame
    if not body:
        return
    cut = data.draw(st.integers(0, len(body) - 1))
    try:
        decoded = decode(first, body[:cut])
    except MalformedPacket:
        return
    assert decoded != packet


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        _decode_all(data)


def test_a_truncated_stream_is_incomplete_not_an_error() -> None:
    data = Subscribe(1, [("a/#", 1)]).encode()
    decoder = Decoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    assert decoder.wanted == 1


def test_the_size_limit_is_checked_on_the_fixed_header() -> None:
    decoder = Decoder(max_packet_size=1000)
    decoder.feed(b"\x30\xe8\x07")  # announces 1000 bytes of body: 1003 in all
    with pytest.raises(PacketTooLarge) as raised:
        decoder.next_frame()
    assert (raised.value.size, raised.value.limit) == (1003, 1000)
    ok = Decoder(max_packet_size=1003)
    ok.feed(b"\x30\xe8\x07")
    assert ok.next_frame() is None


@pytest.mark.parametrize(("name", "level"), [(b"MQTT", 5), (b"MQTT", 3), (b"MQIsdp", 3)])
def test_another_protocol_level_is_reported_with_its_level(name: bytes, level: int) -> None:
    data = encode_frame(0x10, encode_string(name) + bytes((level, 2)) + b"\x00\x3c" + encode_string("c"))
    with pytest.raises(UnsupportedProtocolLevel) as raised:
        _decode_all(data)
    assert raised.value.level == level


def test_known_bytes() -> None:
    """A few packets byte for byte, against the examples of the standard's layout."""
    assert Connect("c", keepalive=10).encode() == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x0a\x00\x01c"
    assert Publish("a/b", b"hi", 1, packet_id=10).encode() == b"\x32\x09\x00\x03a/b\x00\x0ahi"
    assert Publish("a", b"", 0, retain=True).encode() == b"\x31\x03\x00\x01a"
    assert Publish("a", b"", 2, packet_id=1, dup=True).encode() == b"\x3c\x05\x00\x01a\x00\x01"
    assert Subscribe(1, [("a/+", 1)]).encode() == b"\x82\x08\x00\x01\x00\x03a/+\x01"
    assert Connack(5).encode() == b"\x20\x02\x00\x05"
    assert Pingreq().encode() == b"\xc0\x00"
    assert encode_remaining_length(321) == b"\xc1\x02"


@pytest.mark.parametrize("payload_length", [0, 100, 123, 124, 125, 16_379, 16_380, 2_097_000, 2_097_200])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_size_is_the_encoded_length(payload_length: int, qos: int) -> None:
    """The client library sizes a send with it before sending (chatmq/clients/chat.py): across each
    boundary of the remaining length's 1-4 bytes it equals what the encoder writes."""
    topic = "chat/é/send/u"
    packet_id = 7 if qos else None
    encoded = codec.encode_publish(topic, b"x" * payload_length, qos, packet_id, False)
    assert codec.publish_size(topic, payload_length, qos) == len(encoded)
