"""Bad MQTT input against a real stack (`chatmq up`): malformed and truncated packets, oversize,
invalid UTF-8, wildcards and ``$`` in publish topics, and bad send payloads. Each case: a clear
refusal (connection closed, or a ``rejected`` ack naming the problem), the broker still serves a
well-behaved client afterwards, and nothing is stored."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import orjson
import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.core.mqtt.codec import encode_frame, encode_string
from tests.broker import raw
from tests.stack import RawClient, Stack

CONV = "sec1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack") / "data", redis_server.url).start()
    running.add_user("alice")
    running.add_user("bob")
    running.create_conv(CONV, "alice", "bob")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.token("alice")


def _stored(stack: Stack, token: str) -> int:
    status, body = stack.http("GET", f"/v1/conversations/{CONV}/messages?limit=200", token=token)
    assert status == 200, body
    return len(body["messages"])


def _still_serving(stack: Stack, token: str) -> None:
    client = RawClient(stack.mqtt_port, "alice", token, client_id="alice.probe")
    try:
        assert not client.refused
    finally:
        client.close()
    status, _ = stack.http("GET", "/healthz")
    assert status == 200


def _connected_raw(stack: Stack, token: str, client_id: str) -> raw.RawClient:
    conn = raw.RawClient(stack.mqtt_port)
    conn.send(raw.connect(client_id, username="alice", password=token))
    connack = conn.read(4)
    assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
    return conn


MALFORMED: dict[str, bytes] = {
    "garbage before CONNECT": b"\x00\x01\x02\x03garbage",
    "reserved packet type 15": encode_frame(0xF0, b""),
    "remaining length over 4 bytes": b"\x30\xff\xff\xff\xff\x7f",
    "PUBLISH with invalid UTF-8 topic": encode_frame(0x32, encode_string(b"chat/\xff\xfe/send/alice")
                                                   + struct.pack("!H", 1) + b"{}"),
    "PUBLISH with a wildcard topic": raw.publish(f"chat/{CONV}/send/+", b"{}", qos=1),
    "PUBLISH with a multi-level wildcard": raw.publish("chat/#", b"{}", qos=1),
    "PUBLISH with a NUL in the topic": raw.publish(f"chat/{CONV}/send/alice\x00", b"{}", qos=1),
    "PUBLISH QoS 3 (invalid)": encode_frame(0x36, encode_string(f"chat/{CONV}/send/alice") + b"\x00\x01{}"),
    "SUBSCRIBE without topics": encode_frame(0x82, struct.pack("!H", 1)),
    "second CONNECT": raw.connect("again", username="alice", password="x"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_packets_close_the_connection(stack: Stack, token: str, name: str) -> None:
    before = _stored(stack, token)
    pre_connect = name == "garbage before CONNECT"
    conn = raw.RawClient(stack.mqtt_port) if pre_connect else _connected_raw(stack, token, f"alice.bad{len(name)}")
    try:
        conn.send(MALFORMED[name])
        # Refused: the broker hangs up (MQTT 3.1.1 has no error packet for a malformed one).
        closed = conn.closed_by_peer(3.0)
    finally:
        conn.close()
    assert _stored(stack, token) == before
    _still_serving(stack, token)
    assert closed, f"{name}: connection kept open"


@pytest.mark.timeout(60)
def test_truncated_frame_is_dropped_when_the_peer_goes(stack: Stack, token: str) -> None:
    conn = _connected_raw(stack, token, "alice.trunc")
    frame = raw.publish(f"chat/{CONV}/send/alice", orjson.dumps({"client_msg_id": "t1", "body": "x"}), qos=1)
    conn.send(frame[: len(frame) // 2])
    conn.close()
    _still_serving(stack, token)
    status, body = stack.http("GET", f"/v1/conversations/{CONV}/messages?limit=200", token=token)
    assert status == 200, body
    assert "t1" not in {m["client_msg_id"] for m in body["messages"]}


@pytest.mark.timeout(60)
def test_oversize_packet_closes_the_connection(stack: Stack, token: str) -> None:
    before = _stored(stack, token)
    conn = _connected_raw(stack, token, "alice.big")
    try:
        body = "x" * (200 * 1024)
        conn.send(raw.publish(f"chat/{CONV}/send/alice", orjson.dumps({"client_msg_id": "big", "body": body}), qos=1))
        assert conn.closed_by_peer(5.0)
    finally:
        conn.close()
    assert _stored(stack, token) == before
    _still_serving(stack, token)


BAD_PAYLOADS: dict[str, bytes] = {
    "invalid UTF-8": b'{"client_msg_id": "u1", "body": "\xff\xfe"}',
    "not JSON": b"hello",
    "a JSON array": b'["u2", "hi"]',
    "body of the wrong type": b'{"client_msg_id": "u3", "body": 5}',
    "injection in client_msg_id": b'{"client_msg_id": {"$ne": null}, "body": "x"}',
    "client_msg_id too long": b'{"client_msg_id": "' + b"x" * 65 + b'", "body": "x"}',
    "huge number id": b'{"client_msg_id": 1' + b"0" * 5000 + b', "body": "x"}',
    "huge float": b'{"client_msg_id": "u4", "body": "x", "seq": 1e999}',
    "deep JSON": b'{"client_msg_id": "u5", "body": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "empty payload": b"",
    "missing body": b'{"client_msg_id": "u6"}',
    "attachments of the wrong type": b'{"client_msg_id": "u7", "body": "x", "attachments": "evil"}',
}


@pytest.mark.timeout(60)
def test_bad_send_payloads_get_a_rejected_ack_and_store_nothing(stack: Stack, token: str) -> None:
    before = _stored(stack, token)
    client = RawClient(stack.mqtt_port, "alice", token, client_id="alice.payloads")
    try:
        assert client.subscribe("user/alice/ack")
        for name, payload in BAD_PAYLOADS.items():
            client.publish(f"chat/{CONV}/send/alice", payload)
            ack = orjson.loads(client.expect("user/alice/ack"))
            assert ack["status"] == "rejected", (name, ack)
            assert ack["error"]["code"] and ack["error"]["message"], (name, ack)
        # A good send afterwards still goes through: the bridge was not wedged by the bad ones.
        client.publish(f"chat/{CONV}/send/alice", orjson.dumps({"client_msg_id": "good", "body": "ok"}))
        ack = orjson.loads(client.expect("user/alice/ack"))
        assert ack["status"] == "received", ack
    finally:
        client.close()
    assert _stored(stack, token) == before + 1
    _still_serving(stack, token)


@pytest.mark.timeout(60)
def test_sends_in_another_users_name_or_to_system_topics_are_not_stored(stack: Stack, token: str) -> None:
    before = _stored(stack, token)
    client = RawClient(stack.mqtt_port, "alice", token, client_id="alice.forge")
    try:
        for topic in (f"chat/{CONV}/send/bob", "$SYS/broker/x", "$share/g/chat/x", f"chat/{CONV}/msg",
                      "user/bob/ack", f"chat/{CONV}/send/alice/extra"):
            client.client.publish(topic, orjson.dumps({"client_msg_id": "f1", "body": "forged"}), qos=1)
    finally:
        client.close()
    _still_serving(stack, token)
    assert _stored(stack, token) == before
