"""The MediaStore contract, run against every backend (see conftest.py)."""

from __future__ import annotations

import hashlib
import io
import threading

import pytest

from chatmq.core.media import MediaNotFound, MediaStore, is_media_id
from tests.media.samples import PNG

pytestmark = pytest.mark.timeout(30)


def test_put_get_open_round_trip(media: MediaStore) -> None:
    data = PNG + bytes(range(256)) * 1000  # several GridFS chunks
    info = media.put("alice", io.BytesIO(data), "image/png", name="cat ü.png")
    assert is_media_id(info.id) and info.url == f"/v1/media/{info.id}"
    assert (info.owner, info.mime, info.size, info.name) == ("alice", "image/png", len(data), "cat ü.png")
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.created_at > 0
    assert media.get(info.id) == info
    with media.open(info.id) as stream:
        assert stream.read() == data


def test_ids_are_random_and_distinct(media: MediaStore) -> None:
    a = media.put("alice", io.BytesIO(b"same"), "text/plain")
    b = media.put("alice", io.BytesIO(b"same"), "text/plain")
    assert a.id != b.id and a.sha256 == b.sha256
    assert media.get(a.id).name is None  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "nope", "../../etc/passwd", "0" * 31, "A" * 32, "0" * 32 + "/x", "..", "0" * 33])
def test_unknown_or_impossible_ids(media: MediaStore, bad: str) -> None:
    assert media.get(bad) is None
    with pytest.raises(MediaNotFound):
        media.open(bad)
    with pytest.raises(MediaNotFound):
        media.link(bad, "c1")


def test_unknown_valid_id(media: MediaStore) -> None:
    missing = "0123456789abcdef0123456789abcdef"
    assert media.get(missing) is None
    with pytest.raises(MediaNotFound):
        media.open(missing)
    with pytest.raises(MediaNotFound):
        media.link(missing, "c1")


def test_links_accumulate_idempotently(media: MediaStore) -> None:
    info = media.put("alice", io.BytesIO(b"hi"), "text/plain")
    assert media.get(info.id).convs == frozenset()  # type: ignore[union-attr]
    media.link(info.id, "c1")
    media.link(info.id, "c1")
    media.link(info.id, "team.x-1")
    assert media.get(info.id).convs == {"c1", "team.x-1"}  # type: ignore[union-attr]


def test_link_refuses_a_bad_conversation_id(media: MediaStore) -> None:
    info = media.put("alice", io.BytesIO(b"hi"), "text/plain")
    with pytest.raises(ValueError, match="conversation id"):
        media.link(info.id, "../x")
    assert media.get(info.id).convs == frozenset()  # type: ignore[union-attr]


def test_concurrent_links_are_all_kept(media: MediaStore) -> None:
    info = media.put("alice", io.BytesIO(b"hi"), "text/plain")
    convs = [f"c{i}" for i in range(20)]
    threads = [threading.Thread(target=media.link, args=(info.id, conv)) for conv in convs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert media.get(info.id).convs == set(convs)  # type: ignore[union-attr]


def test_empty_file(media: MediaStore) -> None:
    info = media.put("bob", io.BytesIO(b""), "text/plain")
    assert info.size == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    with media.open(info.id) as stream:
        assert stream.read() == b""


def test_unlink_takes_one_conversation_away(media: MediaStore) -> None:
    info = media.put("alice", io.BytesIO(b"hi"), "text/plain")
    media.link(info.id, "c1")
    media.link(info.id, "c2")
    media.unlink(info.id, "c1")
    media.unlink(info.id, "c1")  # idempotent
    media.unlink(info.id, "never-linked")
    assert media.get(info.id).convs == {"c2"}  # type: ignore[union-attr]


def test_delete_erases_bytes_and_metadata(media: MediaStore) -> None:
    data = PNG + bytes(range(256)) * 1000  # several GridFS chunks
    info = media.put("alice", io.BytesIO(data), "image/png")
    other = media.put("alice", io.BytesIO(b"stays"), "text/plain")
    media.link(info.id, "c1")
    media.delete(info.id)
    media.delete(info.id)  # idempotent
    media.delete("0123456789abcdef0123456789abcdef")
    media.delete("../../etc/passwd")
    assert media.get(info.id) is None
    with pytest.raises(MediaNotFound):
        media.open(info.id)
    with pytest.raises(MediaNotFound):
        media.link(info.id, "c1")
    with media.open(other.id) as stream:
        assert stream.read() == b"stays"


def test_ids_walk_every_item_in_order(media: MediaStore) -> None:
    stored = sorted(media.put("alice", io.BytesIO(bytes([i])), "text/plain").id for i in range(5))
    assert list(media.ids()) == stored
    media.delete(stored[0])
    assert list(media.ids()) == stored[1:]


def test_restore_keeps_id_metadata_and_links_and_is_idempotent(media: MediaStore) -> None:
    from dataclasses import replace

    from chatmq.core.media.base import MediaCorrupt, MediaInfo

    data = PNG + b"x" * 70_000
    info = MediaInfo("c" * 32, "bob", "image/png", len(data), hashlib.sha256(data).hexdigest(), 1_700_000_000_000,
                     "cat.png", frozenset({"general"}))
    assert media.restore(info, io.BytesIO(data)) is True
    assert media.get(info.id) == info
    with media.open(info.id) as fh:
        assert fh.read() == data
    assert media.restore(replace(info, convs=frozenset({"general", "dm"})), io.BytesIO(data)) is False
    assert media.get(info.id) == replace(info, convs=frozenset({"general", "dm"}))
    with pytest.raises(MediaCorrupt):
        media.restore(replace(info, id="d" * 32), io.BytesIO(data[:-1]))
    assert media.get("d" * 32) is None and list(media.ids()) == [info.id]
