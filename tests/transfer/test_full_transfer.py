"""Full export/import (chatmq/cli/transfer.py): SQLite -> MongoDB -> SQLite with identical history.

MongoDB is mongomock here, and a real server when CHATMQ_TEST_MONGO_URL is set (no MongoDB server
can be installed on the build machine)."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from chatmq.cli.main import cli
from chatmq.cli.transfer import export_all, import_all
from chatmq.core.media import MediaStore, mongomock_media_store
from chatmq.core.media.fs import FsMediaStore
from chatmq.core.store.base import Store
from chatmq.core.store.mongo import MongoStore
from chatmq.core.store.sqlite import SQLiteStore
from tests.conftest import mongo_test_url
from tests.store.helpers import MEDIA_A, MEDIA_B, msg, populate, snapshot

pytestmark = pytest.mark.timeout(120)


def media_snapshot(media: MediaStore) -> dict[str, Any]:
    out = {}
    for media_id in media.ids():
        with media.open(media_id) as fh:
            out[media_id] = (media.get(media_id), fh.read())
    return out


def populate_media(media: MediaStore) -> None:
    from chatmq.core.media.base import MediaInfo

    for media_id, owner, data, convs in ((MEDIA_A, "alice", b"\x89PNG" + b"a" * 100_000, {"general"}),
                                         (MEDIA_B, "carol", b"text file", set()),
                                         ("f" * 32, "bob", b"uploaded, never sent", set())):
        info = MediaInfo(media_id, owner, "application/octet-stream", len(data), hashlib.sha256(data).hexdigest(),
                         1_700_000_000_000, None, frozenset(convs))
        media.restore(info, io.BytesIO(data))


@pytest.fixture(params=["mongomock", *(["mongo"] if mongo_test_url() else [])])
def mongo(request: pytest.FixtureRequest) -> Iterator[tuple[Store, MediaStore]]:
    name = f"chatmq_transfer_{uuid.uuid4().hex[:12]}"
    if request.param == "mongomock":
        yield MongoStore.mongomock(name), mongomock_media_store(name)
        return
    from pymongo import MongoClient

    from chatmq.core.media.gridfs_store import GridFSMediaStore

    client: MongoClient = MongoClient(mongo_test_url(), serverSelectionTimeoutMS=5000)
    try:
        yield MongoStore(client[name]), GridFSMediaStore(client[name])
    finally:
        client.drop_database(name)
        client.close()


def test_sqlite_to_mongodb_and_back_keeps_everything(tmp_path: Path, mongo: tuple[Store, MediaStore]) -> None:
    source, source_media = SQLiteStore(str(tmp_path / "a.db")), FsMediaStore(tmp_path / "a-media")
    populate(source)
    populate_media(source_media)
    expected, expected_media = snapshot(source), media_snapshot(source_media)

    manifest = export_all(source, source_media, tmp_path / "one", source="sqlite", quiet=True)
    assert manifest["counts"] == {"users": 4, "conversations": 3, "entries": 13, "markers": 3, "push_targets": 2,
                                  "mutes": 2, "webhooks": 1, "media": 3}
    store, media = mongo
    added = import_all(store, media, tmp_path / "one", quiet=True)
    assert added == manifest["counts"]
    assert snapshot(store) == expected and media_snapshot(media) == expected_media
    assert import_all(store, media, tmp_path / "one", quiet=True) == dict.fromkeys(manifest["counts"], 0)

    export_all(store, media, tmp_path / "two", source="mongodb", quiet=True)
    back, back_media = SQLiteStore(str(tmp_path / "b.db")), FsMediaStore(tmp_path / "b-media")
    import_all(back, back_media, tmp_path / "two", quiet=True)
    assert snapshot(back) == expected and media_snapshot(back_media) == expected_media
    for name in ("users.jsonl", "conversations.jsonl", "entries.jsonl", "markers.jsonl", "media.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # the moved installation goes on: the next seq, the rules, the idempotence keys
    result = back.append([msg("general", "bob", "g2", "again")])
    assert result[0].duplicate and result[0].message is not None and result[0].message.seq == 2
    assert back.pending_outbox() == [] and back.pending_events() == []


def test_an_interrupted_import_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, source_media = SQLiteStore(str(tmp_path / "a.db")), FsMediaStore(tmp_path / "a-media")
    populate(source)
    populate_media(source_media)
    export_all(source, source_media, tmp_path / "out", source="sqlite", quiet=True)
    target, media = SQLiteStore(str(tmp_path / "b.db")), FsMediaStore(tmp_path / "b-media")
    monkeypatch.setattr("chatmq.cli.transfer.PAGE", 4)
    calls = 0
    real = target.restore_entries

    def dies_on_the_fourth_batch(entries: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real(entries)

    monkeypatch.setattr(target, "restore_entries", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        import_all(target, media, tmp_path / "out", quiet=True)
    assert len(target.log_entries("general")) == 4  # archive and dm-alice-bob whole, then general 1-4
    monkeypatch.setattr(target, "restore_entries", real)
    added = import_all(target, media, tmp_path / "out", quiet=True)
    assert added["entries"] == 7 and added["users"] == 0
    assert snapshot(target) == snapshot(source)


def test_a_damaged_export_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source, source_media = SQLiteStore(str(tmp_path / "a.db")), FsMediaStore(tmp_path / "a-media")
    populate(source)
    export_all(source, source_media, tmp_path / "out", source="sqlite", quiet=True)
    entries = tmp_path / "out" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"hello", b"HELLO"))
    target = SQLiteStore(str(tmp_path / "b.db"))
    with pytest.raises(click.ClickException, match=r"entries\.jsonl: does not match the manifest"):
        import_all(target, FsMediaStore(tmp_path / "b-media"), tmp_path / "out", quiet=True)
    assert target.count_users() == 0
    (tmp_path / "out" / "manifest.json").unlink()
    with pytest.raises(click.ClickException, match=r"no manifest\.json"):
        import_all(target, FsMediaStore(tmp_path / "b-media"), tmp_path / "out", quiet=True)


def test_the_commands_move_a_data_dir(tmp_path: Path) -> None:
    source = SQLiteStore(str(tmp_path / "a" / "chatmq.db"))
    populate(source)
    populate_media(FsMediaStore(tmp_path / "a" / "media"))
    runner = CliRunner()
    env = {"CHATMQ_STORE_URL": "", "CHATMQ_DATA_DIR": ""}
    result = runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "a")], env=env)
    assert result.exit_code == 0, result.output
    assert "13 entries" in result.output and "3 media" in result.output
    result = runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "a")], env=env)
    assert result.exit_code == 1 and "holds an export already" in result.output
    result = runner.invoke(cli, ["import", str(tmp_path / "out"), "--data-dir", str(tmp_path / "b")], env=env)
    assert result.exit_code == 0, result.output
    assert "imported: 4 users" in result.output
    target = SQLiteStore(str(tmp_path / "b" / "chatmq.db"))
    assert snapshot(target) == snapshot(source)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"] == "sqlite"
