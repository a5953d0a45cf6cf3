"""``chatmq backup``, ``chatmq verify-backup`` and ``chatmq restore``: a point-in-time copy of an
embedded installation (the SQLite store, the media directory, the token signing key), taken while
the stack runs and writes.

The database is copied with SQLite's online backup API in one step: one read transaction, so the
copy is the database as it stood at one instant (the snapshot), while writers go on (WAL: readers
never block them). Media must match that snapshot: every media item a backed-up message attaches
(and every avatar) must be in the backup. An item is uploaded before any message attaches it, and
a deletion erases the message in the database before it removes the item's files. So media is
copied in two passes: all items before the snapshot, then the items that appeared meanwhile (and
the conversation links as they are now) after it. An item the snapshot refers to is then missing
only if it was uploaded during the first pass and its message deleted between the snapshot and
the second pass; such ids are listed in the manifest (``missing_media``), never silently.

The backup directory::

    manifest.json   format, chatmq version, schema version, time, counts, sha256 of the files
    chatmq.db       the database (rollback-journal mode: one self-contained file)
    media/          the media items, as under the data dir (each with its sha256 in meta.json)
    secret.key      the token signing key (issued tokens stay valid after a restore)

Not in a backup: Redis (presence, sessions, rate limits: rebuilt as devices reconnect), logs,
``stack.json``. MongoDB installations back up with MongoDB's own tools (mongodump, or a snapshot
of a replica set member) or ``chatmq export``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click

from chatmq.cli.settings_opts import make_settings
from chatmq.cli.stackinfo import DataDirBusy, StackLock
from chatmq.core.media.base import MediaStore
from chatmq.core.media.fs import FsMediaStore
from chatmq.core.store.sqlite import BUSY_TIMEOUT_MS, SQLiteStore

FORMAT = "chatmq-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "chatmq.db"
SECRET = "secret.key"
MEDIA = "media"


class BackupError(click.ClickException):
    """A backup that cannot be taken, verified or restored; the message says why."""


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _bar(length: int, label: str, quiet: bool) -> Any:
    return click.progressbar(length=length, label=f"{label:<10}", show_pos=True,
                             file=io.StringIO() if quiet else sys.stderr)  # fmt: skip


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(message, err=True)


def _copy_media(source: MediaStore, target: MediaStore, ids: list[str], label: str, quiet: bool) -> int:
    """Copy the items of ``ids`` not in ``target`` yet; bring every copied item's links up to date."""
    copied = 0
    with _bar(len(ids), label, quiet) as bar:
        for media_id in ids:
            info = source.get(media_id)
            if info is not None:  # else deleted since the walk: nothing the snapshot keeps refers to it
                try:
                    with source.open(media_id) as fh:
                        copied += target.restore(info, fh)
                except (FileNotFoundError, KeyError):  # deleted while being read
                    pass
                held = target.get(media_id)
                for conv in (held.convs - info.convs) if held else ():
                    target.unlink(media_id, conv)
            bar.update(1)
    return copied


def _scan(db: Path) -> tuple[dict[str, int], set[str]]:
    """Counts of the copy, and every media id it refers to (attachments of messages not erased,
    avatars), read through the Store interface."""
    store = SQLiteStore(str(db))
    try:
        referenced = {u.avatar for u in store.list_users() if u.avatar}
        convs = store.list_conversations()
        entries = 0
        for conv in convs:
            after = 0
            while page := store.log_entries(conv.id, after=after, limit=1000):
                entries += len(page)
                referenced |= {a["media_id"] for e in page for a in e.message.attachments
                               if isinstance(a.get("media_id"), str)}  # fmt: skip
                after = page[-1].message.seq
        return {"users": store.count_users(), "conversations": len(convs), "entries": entries}, referenced
    finally:
        store.close()


def _self_contained(db: Path) -> int:
    """Rollback-journal mode (no -wal beside it), and the schema version."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def take_backup(data_dir: Path, dest: Path, *, quiet: bool = False) -> dict[str, Any]:
    """Back up the installation in ``data_dir`` into ``dest`` (new or empty); returns the manifest."""
    source_db = data_dir / DATABASE
    if not source_db.exists():
        raise BackupError(f"no database at {source_db}: nothing to back up (MongoDB installations: chatmq export "
                          "or mongodump)")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: give a new directory for each backup")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.time()
    source_media, media = FsMediaStore(data_dir / MEDIA), FsMediaStore(dest / MEDIA)
    first = list(source_media.ids())
    _copy_media(source_media, media, first, "media", quiet)

    _say(f"database: copying {source_db.stat().st_size / 2**20:.1f} MiB (one consistent snapshot)", quiet)
    source = sqlite3.connect(source_db, timeout=BUSY_TIMEOUT_MS / 1000)
    target = sqlite3.connect(dest / DATABASE)
    try:
        source.backup(target)  # one step: one read transaction, the database at one instant
    finally:
        target.close()
        source.close()
    snapshot_at = int(time.time() * 1000)

    later = sorted(set(source_media.ids()) | set(first))
    _copy_media(source_media, media, later, "media (2)", quiet)
    counts, referenced = _scan(dest / DATABASE)
    schema = _self_contained(dest / DATABASE)
    held = set(media.ids())
    missing = sorted(referenced - held)
    files = {DATABASE: _sha256(dest / DATABASE)}
    if (data_dir / SECRET).exists():
        shutil.copy2(data_dir / SECRET, dest / SECRET)
        os.chmod(dest / SECRET, 0o600)
        files[SECRET] = _sha256(dest / SECRET)
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "chatmq": version("chatmq"), "schema": schema,
        "source": str(data_dir.resolve()), "snapshot_at": snapshot_at,
        "counts": counts | {"media": len(held)}, "files": files, "missing_media": missing,
        "seconds": round(time.time() - started, 3),
    }  # fmt: skip
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: its presence means complete
    return manifest


def verify_backup(backup: Path, *, quiet: bool = False) -> dict[str, Any]:
    """Check a backup against its manifest: file checksums, SQLite's integrity check, every media
    item's bytes against its sha256. Returns the manifest; raises BackupError naming the problem."""
    try:
        manifest = json.loads((backup / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{backup}: no {MANIFEST} (not a backup, or one that did not finish)") from None
    except ValueError as exc:
        raise BackupError(f"{backup / MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{backup}: not a chatmq backup")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise BackupError(f"{backup}: backup format {manifest['version']} is newer than this chatmq: upgrade it")
    for name, expected in manifest["files"].items():
        path = backup / name
        if not path.exists():
            raise BackupError(f"{path}: missing from the backup")
        if _sha256(path) != expected:
            raise BackupError(f"{path}: does not match the manifest's sha256 (damaged)")
    conn = sqlite3.connect(f"file:{backup / DATABASE}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise BackupError(f"{backup / DATABASE}: integrity check failed: {'; '.join(problems[:5])}")
    media = FsMediaStore(backup / MEDIA)
    ids = list(media.ids())
    if len(ids) != manifest["counts"]["media"]:
        raise BackupError(f"{backup / MEDIA}: {len(ids)} items, the manifest says {manifest['counts']['media']}")
    with _bar(len(ids), "verifying", quiet) as bar:
        for media_id in ids:
            info = media.get(media_id)
            if info is None or _sha256(backup / MEDIA / media_id[:2] / media_id / "data") != info.sha256:
                raise BackupError(f"media {media_id}: bytes do not match their sha256 (damaged)")
            bar.update(1)
    return manifest


def restore_backup(backup: Path, data_dir: Path, *, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Verify ``backup``, then make ``data_dir`` hold it. Refused while a stack runs on the data dir
    (its lock, ``stack.lock``, is taken for the whole restore) and, without ``force``, when the data
    dir holds a database already."""
    manifest = verify_backup(backup, quiet=quiet)
    try:
        lock = StackLock(data_dir).acquire()
    except DataDirBusy as exc:
        raise BackupError(f"refusing to restore: {exc}") from None
    try:
        db = data_dir / DATABASE
        if db.exists() and not force:
            raise BackupError(f"{data_dir} holds a database already: restore into a new data dir, or give --force "
                              "to replace it (its current content is lost)")
        staged = data_dir / f"{DATABASE}.restoring"
        shutil.copyfile(backup / DATABASE, staged)
        with staged.open("rb+") as fh:
            os.fsync(fh.fileno())
        for stale in (db, data_dir / f"{DATABASE}-wal", data_dir / f"{DATABASE}-shm"):
            stale.unlink(missing_ok=True)  # an old log must never be replayed over the restored file
        os.replace(staged, db)
        media_dir, staged_media = data_dir / MEDIA, data_dir / f"{MEDIA}.restoring"
        shutil.rmtree(staged_media, ignore_errors=True)
        shutil.copytree(backup / MEDIA, staged_media)
        if media_dir.exists():
            old = data_dir / f"{MEDIA}.replaced"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(media_dir, old)
            shutil.rmtree(old)
        os.replace(staged_media, media_dir)
        if (backup / SECRET).exists():
            shutil.copy2(backup / SECRET, data_dir / SECRET)
            os.chmod(data_dir / SECRET, 0o600)
        if (data_dir / DATABASE).exists():
            SQLiteStore(str(db)).close()  # back to WAL mode, and a schema upgrade if this chatmq is newer
    finally:
        lock.release()
    return manifest


def _data_dir(data_dir: Path | None) -> Path:
    settings = make_settings(data_dir=data_dir)
    if settings.store_url and not settings.store_url.startswith("sqlite:"):
        raise BackupError("the store is not the embedded SQLite one (CHATMQ_STORE_URL): back MongoDB up with "
                          "mongodump or chatmq export")
    return settings.data_dir


_DATA_DIR = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="the installation's data dir [env CHATMQ_DATA_DIR; default ./data]")
_QUIET = click.option("--quiet", "-q", is_flag=True, help="no progress bars")


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="check the backup once written")
@_QUIET
@_DATA_DIR
def backup(dest: Path, verify: bool, quiet: bool, data_dir: Path | None) -> None:
    """Back up the embedded store, its media and its signing key into DEST (new or empty), while the
    stack runs: the database as it stood at one instant, with every media item it refers to."""
    manifest = take_backup(_data_dir(data_dir), dest, quiet=quiet)
    if verify:
        verify_backup(dest, quiet=quiet)
    counts = manifest["counts"]
    click.echo(f"backed up to {dest}: {counts['users']} users, {counts['conversations']} conversations, "
               f"{counts['entries']} log entries, {counts['media']} media in {manifest['seconds']:.1f} s"
               + (" (verified)" if verify else ""))
    for media_id in manifest["missing_media"]:
        click.echo(f"warning: media {media_id} was deleted right after the snapshot; its message refers to it",
                   err=True)


@click.command("verify-backup")
@click.argument("backup_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_QUIET
def verify_backup_command(backup_dir: Path, quiet: bool) -> None:
    """Check BACKUP_DIR against its manifest (checksums, SQLite integrity, media bytes)."""
    manifest = verify_backup(backup_dir, quiet=quiet)
    click.echo(f"{backup_dir}: ok (chatmq {manifest['chatmq']}, schema {manifest['schema']}, "
               f"{manifest['counts']['entries']} log entries, {manifest['counts']['media']} media)")


@click.command("restore")
@click.argument("backup_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="replace the data dir's current database and media")
@_QUIET
@_DATA_DIR
def restore(backup_dir: Path, force: bool, quiet: bool, data_dir: Path | None) -> None:
    """Restore BACKUP_DIR (verified first) into the data dir. Refused while a stack runs on it."""
    target = _data_dir(data_dir)
    manifest = restore_backup(backup_dir, target, force=force, quiet=quiet)
    click.echo(f"restored {backup_dir} into {target}: {manifest['counts']['entries']} log entries, "
               f"{manifest['counts']['media']} media; start it with chatmq up --data-dir {target}")
