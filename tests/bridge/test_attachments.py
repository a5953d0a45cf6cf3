"""Attachments through a real Mosquitto and bridge: only the sender's own uploads may be attached."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.media import MediaInfo, MediaStore, mongomock_media_store, open_media_store
from chatmq.core.store import Store
from tests.bridge.devices import Device
from tests.media import samples

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def media(settings: Settings) -> MediaStore:
    """The bridge's own default: files under the data dir (what the API writes in embedded mode)."""
    return open_media_store(settings)


def put(media: MediaStore, owner: str, data: bytes = samples.PNG, mime: str = "image/png") -> MediaInfo:
    return media.put(owner, io.BytesIO(data), mime, name="x.png")


def send(dev: Device, user: str, cmid: str, attachments: list[dict[str, Any]], conv: str = "c1") -> dict[str, Any]:
    before = len(dev.on(f"user/{user}/ack"))
    dev.publish(f"chat/{conv}/send/{user}", {"client_msg_id": cmid, "body": "look", "attachments": attachments})
    return dev.wait_count(f"user/{user}/ack", before + 1)[-1]


def test_own_media_is_received_and_shared_with_the_conversation(
    bridge: Bridge, store: Store, media: MediaStore, device: Callable[..., Device]
) -> None:
    info = put(media, "alice")
    bob = device("bob", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    attachment = {**info.to_payload(), "name": "cat.png"}  # the upload's answer, as it stands
    ack = send(alice, "alice", "m1", [attachment])
    assert ack["status"] == "received" and ack["seq"] == 1
    (msg,) = bob.wait_count("chat/c1/msg", 1)
    assert msg["attachments"] == [attachment]
    assert [m.attachments for m in store.history("c1").messages] == [(attachment,)]
    assert media.get(info.id).convs == {"c1"}  # type: ignore[union-attr]

    minimal = {"media_id": info.id, "mime": "image/png", "size": info.size}
    assert send(alice, "alice", "m2", [minimal], conv="c2")["status"] == "received"
    assert media.get(info.id).convs == {"c1", "c2"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda own, other: [{**other.to_payload()}], "uploaded by 'alice'"),  # bob's upload
        (lambda own, other: [{"media_id": "0" * 32, "mime": "image/png", "size": 1}], "no media"),  # unknown
        (lambda own, other: [{**own.to_payload(), "mime": "application/pdf"}], "mime"),  # lies about the type
        (lambda own, other: [{**own.to_payload(), "size": own.size + 1}], "size"),
        (lambda own, other: [{**own.to_payload(), "sha256": "0" * 64}], "sha256"),
        (lambda own, other: [own.to_payload(), other.to_payload()], "attachments[1]"),  # one bad of two
    ],
)
def test_bad_attachments_are_rejected_and_nothing_is_stored(
    bridge: Bridge, store: Store, media: MediaStore, device: Callable[..., Device],
    make: Callable[[MediaInfo, MediaInfo], list[dict[str, Any]]], message: str,
) -> None:
    own, other = put(media, "alice"), put(media, "bob")
    watcher = device("carol", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    ack = send(alice, "alice", "bad-1", make(own, other))
    assert ack["status"] == "rejected" and ack["client_msg_id"] == "bad-1"
    assert ack["error"]["code"] == "bad_attachment" and message in ack["error"]["message"]
    assert store.history("c1").messages == []
    assert media.get(own.id).convs == frozenset() and media.get(other.id).convs == frozenset()  # type: ignore[union-attr]
    # The same client_msg_id, fixed, is then accepted: the rejection left no trace.
    ack = send(alice, "alice", "bad-1", [own.to_payload()])
    assert ack["status"] == "received" and ack["seq"] == 1
    assert [m["client_msg_id"] for m in watcher.wait_count("chat/c1/msg", 1)] == ["bad-1"]


def test_malformed_attachment_is_bad_payload(
    bridge: Bridge, store: Store, media: MediaStore, device: Callable[..., Device]
) -> None:
    own = put(media, "alice")
    alice = device("alice", ["user/alice/ack"])
    for attachments in ([{"k": "v"}], [{**own.to_payload(), "url": "/etc/passwd"}], [{**own.to_payload(), "x": 1}]):
        ack = send(alice, "alice", "m1", attachments)
        assert (ack["status"], ack["error"]["code"]) == ("rejected", "bad_payload")
    assert store.history("c1").messages == []


def test_gridfs_media_store(
    start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    """The bridge against GridFS (mongomock), as in MongoDB mode."""
    media = mongomock_media_store(f"bridge-{uuid.uuid4().hex}")
    start_bridge(media=media)
    own, other = put(media, "alice"), put(media, "bob")
    alice = device("alice", ["user/alice/ack"])
    assert send(alice, "alice", "m1", [other.to_payload()])["error"]["code"] == "bad_attachment"
    assert send(alice, "alice", "m2", [own.to_payload()])["status"] == "received"
    assert media.get(own.id).convs == {"c1"}  # type: ignore[union-attr]
    assert [m.client_msg_id for m in store.history("c1").messages] == ["m2"]
