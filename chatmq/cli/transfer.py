"""``chatmq export`` and ``chatmq import``: everything the store and the media store hold, as a
directory of JSON Lines files, to move an installation (SQLite to MongoDB and back) or keep it.

The directory::

    manifest.json        format version, chatmq version, source, counts, sha256 of every file
    users.jsonl          id, password hash, disabled, created_at, display name, avatar
    conversations.jsonl  id, title, owner, created_at, last_seq, members
    entries.jsonl        the log, conversation by conversation in seq order: every entry with its
                         id, seq, kind, time, target/reply_to/emoji and erasure, and for a deletion
                         the media it erased
    markers.jsonl        delivered/read markers
    push_targets.jsonl   device push registrations
    mutes.jsonl          muted conversations
    webhooks.jsonl       webhook subscriptions (with their signing secrets)
    media.jsonl          media metadata (owner, mime, size, sha256, links); bytes in media/<id>

Everything is read and written through the Store and MediaStore interfaces (``log_entries``,
``restore_*``), so it works the same on every backend. An import keeps ids, seqs and times; it
checks no rule again and tells no one (no push, no webhook, no conversation event: history moving
is not news). It is idempotent: what is already there is left alone, so an import can be run
again, and an interrupted one is resumed by running it again. A seq taken by a different entry
is refused (RestoreConflict), never renumbered.

Not exported, on purpose: the notifier's outbox and delivery log (pending notifications would be
stale after a move; drain the notifier first), the conversation-event outbox, the membership
change log and the version counters (rebuilt by the target as it is written), presence, sessions
and tokens (Redis), and derived indexes (message state, reactions, media references, a search
index): the target rebuilds them from the entries.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import orjson
from pydantic import TypeAdapter, ValidationError

from chatmq.cli.settings_opts import make_settings, store_options
from chatmq.core.media import MediaStore, open_media_store
from chatmq.core.media.base import MediaInfo
from chatmq.core.store import Conversation, LogEntry, Marker, Mute, Store, StoreError, User, open_store
from chatmq.core.store.base import Message, PushTarget, Webhook

FORMAT = "chatmq-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAGE = 500
T = TypeVar("T")


class ExportError(click.ClickException):
    """An export directory that is not one, is incomplete, or does not match its manifest."""


@dataclass(frozen=True, slots=True)
class Section:
    """One JSON Lines file: what it holds and how a line becomes what the stores take."""

    file: str
    label: str
    read: Callable[[dict[str, Any]], Any]


def _adapter(kind: type[T]) -> Callable[[dict[str, Any]], T]:
    adapter = TypeAdapter(kind)
    return adapter.validate_python


def _entry(data: dict[str, Any]) -> LogEntry:
    erased = data.pop("erased_media", [])
    return LogEntry(_adapter(Message)(data), tuple(erased))


def _media(data: dict[str, Any]) -> MediaInfo:
    return _adapter(MediaInfo)(data | {"convs": frozenset(data.get("convs", ()))})

SECTIONS = {
    "users": Section("users.jsonl", "users", _adapter(User)),
    "conversations": Section("conversations.jsonl", "conversations", _adapter(Conversation)),
    "entries": Section("entries.jsonl", "log entries", _entry),
    "markers": Section("markers.jsonl", "markers", _adapter(Marker)),
    "push_targets": Section("push_targets.jsonl", "push targets", _adapter(PushTarget)),
    "mutes": Section("mutes.jsonl", "mutes", _adapter(Mute)),
    "webhooks": Section("webhooks.jsonl", "webhooks", _adapter(Webhook)),
    "media": Section("media.jsonl", "media", _media),
}


def _line(record: Any) -> bytes:
    if isinstance(record, LogEntry):
        data = asdict(record.message) | {"erased_media": list(record.erased_media)}
    elif isinstance(record, MediaInfo):
        data = asdict(record) | {"convs": sorted(record.convs)}
    else:
        data = asdict(record)
    return orjson.dumps(data) + b"\n"


def _paged(fetch: Callable[[str | None], list[T]], key: Callable[[T], str]) -> Iterator[T]:
    after: str | None = None
    while page := fetch(after):
        yield from page
        after = key(page[-1])


class _Writer:
    """Writes one section file, counting lines and hashing as it goes."""

    def __init__(self, path: Path) -> None:
        self._fh: IO[bytes] = path.open("wb")
        self.hash = hashlib.sha256()
        self.lines = 0

    def write(self, record: Any) -> None:
        raw = _line(record)
        self._fh.write(raw)
        self.hash.update(raw)
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self._fh.close()
        return {"sha256": self.hash.hexdigest(), "lines": self.lines}


def _bar(length: int, label: str, quiet: bool) -> Any:
    return click.progressbar(length=length, label=f"{label:<16}", file=io.StringIO() if quiet else sys.stderr,
                             show_pos=True)  # fmt: skip


def export_all(store: Store, media: MediaStore, out: Path, *, source: str, quiet: bool = False) -> dict[str, Any]:
    """Write everything to ``out`` (created; must not hold an export already). Returns the manifest."""
    if (out / MANIFEST).exists():
        raise ExportError(f"{out} holds an export already: give an empty or new directory")
    (out / "media").mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    writers = {name: _Writer(out / section.file) for name, section in SECTIONS.items()}
    try:
        users = writers["users"]
        user_ids: list[str] = []
        with _bar(store.count_users(), "users", quiet) as bar:
            for user in _paged(lambda after: store.list_users(after=after, limit=PAGE), lambda u: u.id):
                users.write(user)
                user_ids.append(user.id)
                bar.update(1)
        convs = list(_paged(lambda after: store.list_conversations(after=after, limit=PAGE), lambda c: c.id))
        for conv in convs:
            writers["conversations"].write(conv)
        with _bar(sum(c.last_seq for c in convs), "log entries", quiet) as bar:
            for conv in convs:
                after = 0
                while page := store.log_entries(conv.id, after=after, limit=PAGE):
                    for entry in page:
                        writers["entries"].write(entry)
                    bar.update(page[-1].message.seq - after)
                    after = page[-1].message.seq
                for marker in store.markers(conv.id):
                    writers["markers"].write(marker)
        conv_ids = [c.id for c in convs]
        for start in range(0, len(conv_ids), PAGE):
            for mute in store.mutes(conv_ids[start : start + PAGE]):
                writers["mutes"].write(mute)
        for start in range(0, len(user_ids), PAGE):
            for target in store.push_targets(user_ids[start : start + PAGE]):
                writers["push_targets"].write(target)
        for webhook in store.webhooks():
            writers["webhooks"].write(webhook)
        media_ids = list(media.ids())
        with _bar(len(media_ids), "media", quiet) as bar:
            for media_id in media_ids:
                info = media.get(media_id)
                if info is not None:  # deleted since the walk: nothing refers to it any more
                    _copy_blob(media, info, out / "media" / media_id)
                    writers["media"].write(info)
                bar.update(1)
    finally:
        for name, writer in writers.items():
            files[SECTIONS[name].file] = writer.close()
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "chatmq": version("chatmq"), "source": source,
        "counts": {name: files[section.file]["lines"] for name, section in SECTIONS.items()},
        "files": files,
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: its presence means complete
    return manifest


def _copy_blob(media: MediaStore, info: MediaInfo, path: Path) -> None:
    hasher = hashlib.sha256()
    with media.open(info.id) as src, path.open("wb") as dst:
        while chunk := src.read(1 << 16):
            hasher.update(chunk)
            dst.write(chunk)
    if hasher.hexdigest() != info.sha256:
        raise ExportError(f"media {info.id}: stored bytes do not match their sha256 (the media store is damaged)")


def read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise ExportError(f"{directory}: no {MANIFEST} (not an export, or an export that did not finish)") from None
    except ValueError as exc:
        raise ExportError(f"{directory / MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{directory}: not a chatmq export")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise ExportError(f"{directory}: export format {manifest['version']} is newer than this chatmq reads "
                          f"({FORMAT_VERSION}): upgrade chatmq")
    return manifest


def verify_export(directory: Path, manifest: dict[str, Any]) -> None:
    """Every section file matches the sha256 and line count the manifest records."""
    for section in SECTIONS.values():
        expected = manifest["files"].get(section.file)
        path = directory / section.file
        if expected is None or not path.exists():
            raise ExportError(f"{path}: missing from the export")
        hasher, lines = hashlib.sha256(), 0
        with path.open("rb") as fh:
            for raw in fh:
                hasher.update(raw)
                lines += 1
        if (hasher.hexdigest(), lines) != (expected["sha256"], expected["lines"]):
            raise ExportError(f"{path}: does not match the manifest (damaged or edited)")


def _records(directory: Path, section: Section) -> Iterator[Any]:
    path = directory / section.file
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                yield section.read(orjson.loads(raw))
            except (orjson.JSONDecodeError, ValidationError, TypeError, ValueError) as exc:
                raise ExportError(f"{path}:{number}: not a valid {section.label} line ({exc})") from None


def _batches(records: Iterable[T], size: int, same: Callable[[T, T], bool] = lambda a, b: True) -> Iterator[list[T]]:
    batch: list[T] = []
    for record in records:
        if batch and (len(batch) >= size or not same(batch[-1], record)):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def import_all(store: Store, media: MediaStore, directory: Path, *, quiet: bool = False) -> dict[str, int]:
    """Restore an export into the stores; returns how many of each were new."""
    manifest = read_manifest(directory)
    verify_export(directory, manifest)
    counts: dict[str, int] = manifest["counts"]
    added: dict[str, int] = {}
    writers: dict[str, Callable[[list[Any]], int]] = {
        "users": store.restore_users,
        "conversations": store.restore_conversations,
        "entries": store.restore_entries,
        "markers": store.restore_markers,
        "push_targets": store.restore_push_targets,
        "mutes": store.restore_mutes,
        "webhooks": lambda hooks: sum(_add_webhook(store, hook) for hook in hooks),
        "media": lambda infos: sum(_restore_blob(media, directory, info) for info in infos),
    }
    for name, section in SECTIONS.items():
        same = (lambda a, b: a.message.conv == b.message.conv) if name == "entries" else (lambda a, b: True)
        added[name] = 0
        with _bar(counts.get(name, 0), section.label, quiet) as bar:
            for batch in _batches(_records(directory, section), 50 if name == "media" else PAGE, same):
                try:
                    added[name] += writers[name](batch)
                except StoreError as exc:
                    raise click.ClickException(f"{section.label}: {exc}") from None
                bar.update(len(batch))
    return added


def _add_webhook(store: Store, hook: Webhook) -> bool:
    if any(existing.id == hook.id for existing in store.webhooks()):
        return False
    store.add_webhook(hook)
    return True


def _restore_blob(media: MediaStore, directory: Path, info: MediaInfo) -> bool:
    path = directory / "media" / info.id
    try:
        with path.open("rb") as fh:
            return media.restore(info, fh)
    except FileNotFoundError:
        raise ExportError(f"{path}: missing from the export") from None
    except ValueError as exc:  # MediaCorrupt
        raise ExportError(str(exc)) from None


def _stores(data_dir: Path | None, store_url: str | None) -> tuple[Store, MediaStore, str]:
    settings = make_settings(data_dir=data_dir, store_url=store_url)
    url = settings.resolved_store_url
    return open_store(url), open_media_store(settings), url.split(":", 1)[0]


@click.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@store_options
def export(directory: Path, quiet: bool, data_dir: Path | None, store_url: str | None) -> None:
    """Write everything (users, conversations, the whole log with its ids and seqs, markers,
    push targets, mutes, webhooks, media) to DIRECTORY, for `chatmq import`.

    Runs beside a live stack; what is written meanwhile may or may not be in it (for a point in
    time copy of the embedded store use `chatmq backup`)."""
    store, media, source = _stores(data_dir, store_url)
    try:
        manifest = export_all(store, media, directory, source=source, quiet=quiet)
    finally:
        store.close()
        media.close()
    click.echo(f"exported to {directory}: " + ", ".join(f"{n} {k.replace('_', ' ')}"
                                                          for k, n in manifest["counts"].items()))


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@store_options
def import_(directory: Path, quiet: bool, data_dir: Path | None, store_url: str | None) -> None:
    """Restore an export written by `chatmq export` into this store (SQLite or MongoDB), keeping
    ids, seqs and times.

    The files are checked against the manifest first. Idempotent: running it again adds nothing,
    and an interrupted import is finished by running it again. Nothing is pushed to devices."""
    store, media, _ = _stores(data_dir, store_url)
    try:
        added = import_all(store, media, directory, quiet=quiet)
    finally:
        store.close()
        media.close()
    click.echo("imported: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in added.items())
               + " (new; the rest were there already)")
