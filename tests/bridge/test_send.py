"""Sends through a real Mosquitto: stored, fanned out in seq order, acked only once durable."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.store import Store
from tests.bridge.devices import Device
from tests.stack import tcp_nodelay

pytestmark = pytest.mark.timeout(60)


def send(dev: Device, conv: str, user: str, cmid: str, body: str = "hi") -> None:
    dev.publish(f"chat/{conv}/send/{user}", {"client_msg_id": cmid, "body": body})


def test_send_is_stored_broadcast_and_acked(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    bob = device("bob", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack", "chat/c1/msg"])
    alice.publish("chat/c1/send/alice", {"client_msg_id": "m1", "body": "hello"})  # attachments: test_attachments.py

    (ack,) = alice.wait_count("user/alice/ack", 1)
    assert ack["status"] == "received"
    assert (ack["client_msg_id"], ack["conv"], ack["seq"]) == ("m1", "c1", 1)
    (msg,) = bob.wait_count("chat/c1/msg", 1)
    assert msg["seq"] == 1 and msg["sender"] == "alice" and msg["body"] == "hello"
    assert msg["attachments"] == [] and msg["ts"] == ack["ts"]
    assert alice.wait_count("chat/c1/msg", 1) == [msg]

    stored = store.history("c1").messages
    assert [(m.seq, m.sender, m.client_msg_id, m.body) for m in stored] == [(1, "alice", "m1", "hello")]
    assert stored[0].to_payload() == msg


def test_burst_from_three_senders_over_two_conversations(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    senders = ("alice", "bob", "carol")
    watcher = device("watcher", ["chat/c1/msg", "chat/c2/msg"])
    devs = {user: device(user, [f"user/{user}/ack"]) for user in senders}
    sent: dict[str, list[tuple[str, str]]] = {user: [] for user in senders}
    for i in range(100):  # interleave senders so their sends race inside the broker and the bridge
        for user in senders:
            conv = "c1" if (i + len(user)) % 2 else "c2"
            cmid = f"{user}-{i}"
            devs[user].client.publish(f"chat/{conv}/send/{user}", f'{{"client_msg_id":"{cmid}","body":"{i}"}}', 1)
            sent[user].append((conv, cmid))

    per_conv = {conv: sum(1 for u in senders for c, _ in sent[u] if c == conv) for conv in ("c1", "c2")}
    for conv, count in per_conv.items():
        msgs = watcher.wait_count(f"chat/{conv}/msg", count, timeout=30)
        assert [m["seq"] for m in msgs] == list(range(1, count + 1)), f"{conv} msgs out of seq order"
    stored = {conv: {m.client_msg_id: m for m in store.history(conv, limit=1000).messages} for conv in per_conv}
    assert {conv: len(msgs) for conv, msgs in stored.items()} == per_conv

    for user in senders:
        acks = devs[user].wait_count(f"user/{user}/ack", 100, timeout=30)
        assert sorted(a["client_msg_id"] for a in acks) == sorted(cmid for _, cmid in sent[user])
        last_seq: dict[str, int] = defaultdict(int)
        by_cmid = {a["client_msg_id"]: a for a in acks}
        for conv, cmid in sent[user]:  # each sender's sends keep their order within a conversation
            ack = by_cmid[cmid]
            assert ack["status"] == "received" and ack["conv"] == conv
            assert ack["seq"] == stored[conv][cmid].seq and stored[conv][cmid].sender == user
            assert ack["seq"] > last_seq[conv]
            last_seq[conv] = ack["seq"]
    assert len(watcher.received) == 300  # nothing broadcast twice


def test_resend_with_same_client_msg_id_gets_original_seq(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    watcher = device("watcher", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    send(alice, "c1", "alice", "m1", "first")
    send(alice, "c1", "alice", "m1", "resent with another body")
    send(alice, "c1", "alice", "m2", "second")

    acks = alice.wait_count("user/alice/ack", 3)
    assert [(a["client_msg_id"], a["seq"], a["status"]) for a in acks] == [
        ("m1", 1, "received"), ("m1", 1, "received"), ("m2", 2, "received"),
    ]  # fmt: skip
    assert acks[0]["ts"] == acks[1]["ts"]
    # msg publishes leave in order, so a second broadcast of m1 would have arrived before m2's.
    msgs = watcher.wait_count("chat/c1/msg", 2)
    assert [(m["seq"], m["body"]) for m in msgs] == [(1, "first"), (2, "second")]
    assert [m.body for m in store.history("c1").messages] == ["first", "second"]


def test_non_member_and_unknown_conversation_are_rejected(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    dave = device("dave", ["user/dave/ack"])
    send(dave, "c1", "dave", "d1")
    (ack,) = dave.wait_count("user/dave/ack", 1)
    assert ack["status"] == "rejected" and ack["error"]["code"] == "not_member"
    assert (ack["client_msg_id"], ack["conv"]) == ("d1", "c1")

    send(dave, "nowhere", "dave", "d2")
    ack = dave.wait_count("user/dave/ack", 2)[1]
    assert ack["status"] == "rejected" and ack["error"]["code"] == "unknown_conversation"
    assert (ack["client_msg_id"], ack["conv"]) == ("d2", "nowhere")
    assert store.history("c1").messages == []

    # A membership granted after the bridge started is honoured without a restart.
    store.add_member("c1", "dave")
    send(dave, "c1", "dave", "d3")
    ack = dave.wait_count("user/dave/ack", 3)[2]
    assert (ack["status"], ack["seq"]) == ("received", 1)


BODY_LIMIT = Settings().max_body_bytes
BAD_PAYLOADS = [
    # (what, payload, expected code, expected client_msg_id in the ack)
    ("not JSON", b"hello there", "bad_payload", ""),
    ("empty", b"", "bad_payload", ""),
    ("not an object", b'["m1", "hi"]', "bad_payload", ""),
    ("a JSON string", b'"hi"', "bad_payload", ""),
    ("missing client_msg_id", b'{"body": "hi"}', "bad_payload", ""),
    ("missing body", b'{"client_msg_id": "m1"}', "bad_payload", "m1"),
    ("body not a string", b'{"client_msg_id": "m1", "body": 5}', "bad_payload", "m1"),
    ("client_msg_id not a string", b'{"client_msg_id": 7, "body": "hi"}', "bad_payload", ""),
    ("empty client_msg_id", b'{"client_msg_id": "", "body": "hi"}', "bad_payload", ""),
    ("attachments not a list", b'{"client_msg_id": "m1", "body": "hi", "attachments": "x"}', "bad_payload", "m1"),
    ("extra field", b'{"client_msg_id": "m1", "body": "hi", "sender": "bob"}', "bad_payload", "m1"),
    ("body too large", b'{"client_msg_id": "m1", "body": "' + b"x" * (BODY_LIMIT + 1) + b'"}', "too_large", "m1"),
    ("multibyte body too large", ('{"client_msg_id": "m1", "body": "' + "é" * (BODY_LIMIT // 2 + 1) + '"}').encode(),
     "too_large", "m1"),
    ("invalid UTF-8", b'{"client_msg_id": "m1", "body": "\xff\xfe"}', "bad_payload", "m1"),  # id salvaged
    ("empty body, no attachments", b'{"client_msg_id": "m1", "body": ""}', "empty", "m1"),
    ("blank body, no attachments", b'{"client_msg_id": "m1", "body": " \\n\\t "}', "empty", "m1"),
]  # fmt: skip


def test_every_bad_payload_is_rejected_and_nothing_stored(
    bridge: Bridge, store: Store, device: Callable[..., Device]
) -> None:
    watcher = device("watcher", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    for n, (what, payload, code, cmid) in enumerate(BAD_PAYLOADS, start=1):
        alice.publish("chat/c1/send/alice", payload)
        ack = alice.wait_count("user/alice/ack", n)[-1]
        assert ack["status"] == "rejected", what
        assert ack["error"]["code"] == code, what
        assert ack["error"]["message"], what
        assert (ack["client_msg_id"], ack["conv"]) == (cmid, "c1"), what
    assert store.history("c1").messages == []

    send(alice, "c1", "alice", "ok", "still works")  # the bridge survived all of that
    ack = alice.wait_count("user/alice/ack", len(BAD_PAYLOADS) + 1)[-1]
    assert (ack["status"], ack["client_msg_id"], ack["seq"]) == ("received", "ok", 1)
    assert [m["body"] for m in watcher.wait_count("chat/c1/msg", 1)] == ["still works"]
    assert len(watcher.received) == 1


def test_bridge_socket_has_nagle_off(bridge: Bridge) -> None:
    """Acks and fan-out are small packets: with Nagle on, one could wait ~40 ms for a delayed ACK."""
    assert tcp_nodelay(bridge._client.socket()) == 1


def test_a_retained_send_or_receipt_kept_by_the_broker_is_never_stored(
    start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    """Mosquitto (like any stock broker) keeps a device's retained publish and hands it to every new
    subscriber with retain set: a replay of something old, not a new send. The bridge ignores it."""
    alice = device("alice", ["user/alice/ack", "user/alice/events"])
    alice.client.publish("chat/c1/send/alice", '{"client_msg_id":"old","body":"replayed?"}', 1, retain=True)
    alice.client.publish("chat/c1/receipt/alice", '{"seq":1,"status":"read"}', 1, retain=True).wait_for_publish(5)
    start_bridge()
    send(alice, "c1", "alice", "new")
    (ack,) = alice.wait_count("user/alice/ack", 1)
    assert (ack["client_msg_id"], ack["seq"]) == ("new", 1)
    assert [m.client_msg_id for m in store.history("c1").messages] == ["new"]
    assert alice.on("user/alice/events") == []  # the retained receipt was not processed either
