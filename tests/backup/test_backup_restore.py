"""``chatmq backup`` / ``restore`` (chatmq/cli/backup.py): a backup taken while writers append messages
with media, delete messages (erasing their media) and upload, restored into a new data dir, holds
the database at one instant with every media item it refers to."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatmq.cli.backup import BackupError, restore_backup, take_backup, verify_backup
from chatmq.cli.main import cli
from chatmq.cli.stackinfo import StackLock
from chatmq.core.media.fs import FsMediaStore
from chatmq.core.protocol import EntryKind
from chatmq.core.store.base import NewMessage
from chatmq.core.store.sqlite import SQLiteStore
from tests.store.helpers import TS, msg, populate, snapshot

pytestmark = pytest.mark.timeout(180)


def live_writers(store: SQLiteStore, media: FsMediaStore, stop: threading.Event) -> list[threading.Thread]:
    """What a running bridge and API do to the data dir: uploads then sends attaching them, and
    deletions whose media is then removed; plus uploads that are never sent."""
    store.create_conversation("load", ["alice", "bob"])

    def send() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            info = media.put("alice", io.BytesIO(f"photo {n}".encode() * 50), "text/plain")
            [result] = store.append([msg("load", "alice", f"l{n}", f"load {n}",
                                         attachments=({"media_id": info.id, "mime": "text/plain"},))])
            assert result.message is not None
            media.link(info.id, "load")
            if n % 3 == 0:  # delete an earlier one, erasing its media as the bridge does
                [gone] = store.append([NewMessage("load", "alice", f"del{n}", "", TS, kind=EntryKind.DELETE,
                                                  target=result.message.seq - 1)])
                for media_id in gone.erased_media:
                    if not store.media_attached("load", media_id):
                        media.delete(media_id)

    def upload() -> None:
        while not stop.is_set():
            media.put("bob", io.BytesIO(b"draft" * 100), "text/plain")
            stop.wait(0.01)

    threads = [threading.Thread(target=send), threading.Thread(target=upload)]
    for thread in threads:
        thread.start()
    return threads


def test_a_backup_under_load_restores_a_consistent_installation(tmp_path: Path) -> None:
    live = tmp_path / "live"
    store, media = SQLiteStore(str(live / "chatmq.db")), FsMediaStore(live / "media")
    populate(store)
    (live / "secret.key").write_text("k" * 64)
    for batch in range(20):  # enough that the copy overlaps the writers
        store.append([NewMessage("general", "bob", f"bulk-{batch}-{i}", "x" * 200, TS + batch * 500 + i)
                      for i in range(500)])
    stop = threading.Event()
    threads = live_writers(store, media, stop)
    try:
        while len(store.log_entries("load", limit=60)) < 60:
            pass
        manifest = take_backup(live, tmp_path / "backup", quiet=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    verify_backup(tmp_path / "backup", quiet=True)

    restore_backup(tmp_path / "backup", tmp_path / "restored", quiet=True)
    restored = SQLiteStore(str(tmp_path / "restored" / "chatmq.db"))
    restored_media = FsMediaStore(tmp_path / "restored" / "media")
    now, then = snapshot(store), snapshot(restored)
    for key in ("users", "webhooks", "push_targets", "mutes"):
        assert then[key] == now[key], key
    for conv in ("general", "dm-alice-bob", "archive"):
        assert then[f"conv {conv}"] == now[f"conv {conv}"], conv
    assert (tmp_path / "restored" / "secret.key").read_text() == "k" * 64
    # the load conversation: a prefix of the live log (erased since in the live one, maybe not yet then)
    log = [e.message for e in then["conv load"]["entries"]]
    live_log = [e.message for e in now["conv load"]["entries"]][: len(log)]
    assert len(log) >= 60 and [m.seq for m in log] == list(range(1, len(log) + 1))
    for old, new in zip(log, live_log, strict=True):
        assert (old.id, old.seq, old.kind, old.target, old.client_msg_id) == \
            (new.id, new.seq, new.kind, new.target, new.client_msg_id)  # fmt: skip
        assert old.body == new.body or new.erased
    assert manifest["counts"]["entries"] == sum(len(then[f"conv {c}"]["entries"]) for c in
                                                ("general", "dm-alice-bob", "archive", "load"))  # fmt: skip
    # every media item the restored messages attach is there, whole, linked to the conversation, but
    # for the window the module doc names: an item whose message was deleted after the snapshot and
    # erased before the second media pass is listed as missing, and only such an item
    attached = {a["media_id"] for m in log for a in m.attachments}
    erased_since = {a["media_id"] for old, new in zip(log, live_log, strict=True) if new.erased
                    for a in old.attachments}  # fmt: skip
    missing = attached & set(manifest["missing_media"])
    assert attached - missing and missing <= erased_since
    for media_id in attached - missing:
        info = restored_media.get(media_id)
        assert info is not None and "load" in info.convs
        with restored_media.open(media_id) as fh:
            assert fh.read().startswith(b"photo ")
    # and it goes on: the next seq, the same idempotence keys
    [again] = restored.append([msg("load", "alice", "l1", "resent")])
    assert again.duplicate and again.message is not None and again.message.seq == 1
    [new] = restored.append([msg("load", "alice", "after-restore")])
    assert new.message is not None and new.message.seq == len(log) + 1


def test_restore_refuses_a_running_stack_and_an_occupied_data_dir(tmp_path: Path) -> None:
    live = tmp_path / "live"
    store = SQLiteStore(str(live / "chatmq.db"))
    populate(store)
    take_backup(live, tmp_path / "backup", quiet=True)
    lock = StackLock(live).acquire()  # what `chatmq up` holds while it runs
    try:
        with pytest.raises(BackupError, match="refusing to restore: another chatmq stack is running"):
            restore_backup(tmp_path / "backup", live, force=True, quiet=True)
    finally:
        lock.release()
    with pytest.raises(BackupError, match="holds a database already"):
        restore_backup(tmp_path / "backup", live, quiet=True)
    store.create_user("zed", "h")
    restore_backup(tmp_path / "backup", live, force=True, quiet=True)
    assert SQLiteStore(str(live / "chatmq.db")).get_user("zed") is None
    with pytest.raises(BackupError, match="not empty"):
        take_backup(live, tmp_path / "backup", quiet=True)


def test_verify_finds_damage(tmp_path: Path) -> None:
    live = tmp_path / "live"
    store, media = SQLiteStore(str(live / "chatmq.db")), FsMediaStore(live / "media")
    populate(store)
    info = media.put("alice", io.BytesIO(b"picture" * 1000), "image/png")
    take_backup(live, tmp_path / "b1", quiet=True)
    data = tmp_path / "b1" / "media" / info.id[:2] / info.id / "data"
    data.write_bytes(b"X" + data.read_bytes()[1:])
    with pytest.raises(BackupError, match=f"media {info.id}: bytes do not match"):
        verify_backup(tmp_path / "b1", quiet=True)
    with pytest.raises(BackupError, match="bytes do not match"):
        restore_backup(tmp_path / "b1", tmp_path / "elsewhere", quiet=True)
    assert not (tmp_path / "elsewhere" / "chatmq.db").exists()
    take_backup(live, tmp_path / "b2", quiet=True)
    db = tmp_path / "b2" / "chatmq.db"
    raw = bytearray(db.read_bytes())
    raw[-100] ^= 0xFF
    db.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="does not match the manifest"):
        verify_backup(tmp_path / "b2", quiet=True)
    with pytest.raises(BackupError, match=r"no manifest\.json"):
        verify_backup(tmp_path / "live", quiet=True)


def test_the_commands(tmp_path: Path) -> None:
    live = tmp_path / "live"
    populate(SQLiteStore(str(live / "chatmq.db")))
    runner = CliRunner()
    env = {"CHATMQ_STORE_URL": "", "CHATMQ_DATA_DIR": ""}
    result = runner.invoke(cli, ["backup", str(tmp_path / "b"), "--data-dir", str(live), "-q"], env=env)
    assert result.exit_code == 0, result.output
    assert "4 users, 3 conversations, 13 log entries, 0 media" in result.output and "(verified)" in result.output
    result = runner.invoke(cli, ["verify-backup", str(tmp_path / "b")], env=env)
    assert result.exit_code == 0 and ": ok" in result.output, result.output
    result = runner.invoke(cli, ["restore", str(tmp_path / "b"), "--data-dir", str(live)], env=env)
    assert result.exit_code == 1 and "--force" in result.output
    result = runner.invoke(cli, ["restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "new")], env=env)
    assert result.exit_code == 0 and "13 log entries" in result.output, result.output
    result = runner.invoke(cli, ["backup", str(tmp_path / "c"), "--data-dir", str(tmp_path / "none")], env=env)
    assert result.exit_code == 1 and "nothing to back up" in result.output
