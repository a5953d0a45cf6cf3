"""The embedded store: one SQLite file shared by the broker, bridge, API and admin CLI processes.

Durability: WAL with ``synchronous=FULL`` fsyncs the log on every commit, so once ``append``
returns the batch survives a power cut and the bridge may ack it. Concurrency: every write runs in
``BEGIN IMMEDIATE`` so writers in any process queue on SQLite's file lock (``busy_timeout``) instead
of failing half way; seqs are read and bumped inside that one write transaction, which is what
keeps them gapless even with several writers. Within a process a small connection pool serves the
calling threads: a SQLite connection must not run two statements at once, and pooling (rather than
one connection per thread) keeps short-lived request threads from leaking connections.

The log and the state of its messages: every entry (a message, or a change to one: edit, delete,
react, unreact) is a row of ``messages`` with its own seq. What a change does to its message is
kept in ``message_state`` (latest text, deletion) and ``reactions``, written in the same
transaction as the entry, so ``message_view`` reads one page of messages as they stand with two
indexed queries instead of replaying the log. A deletion erases: the message's body and
attachments and the text of its edits are overwritten in place (``secure_delete`` zeroes the
freed bytes) and the write-ahead log is checkpointed and truncated, so the text leaves the files.

Search: ``search_docs`` holds each message's words as it stands (chatmq.core.search), numbered in
server-time order, and the FTS5 table ``search`` indexes them (external content); both are written
in the append's transaction: a message is indexed when stored, reindexed by an edit, removed by a
deletion (``unindex``, also for whoever removes messages otherwise). FTS5 drops removed words from
its older segments only when it merges them: ``compact_search_index`` does so in short steps when
anything left the index since it last ran (``meta.search_removed`` counts removals, edits' old
words included; a database with messages that predates the count starts at 1, so its first run
compacts).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from chatmq.core.ids import require_id
from chatmq.core.protocol import CHANGE_KINDS, MAX_SEQ, EntryKind
from chatmq.core.search import SearchQuery, decode_cursor, encode_cursor, indexed_text, search_match, search_scope
from chatmq.core.store.base import (
    DELIVERED,
    DELIVERY_CANCELLED,
    DELIVERY_PENDING,
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    EVENT_TITLE_CHANGED,
    MEMBERSHIP_LOG_KEEP,
    MEMBERSHIP_LOG_PRUNE_EVERY,
    OUTBOX_EVENT,
    OUTBOX_MESSAGE,
    OUTBOX_READ,
    AlreadyExists,
    AppendResult,
    Attempt,
    Change,
    Conversation,
    ConversationEvent,
    Delivery,
    DispatchBatch,
    Erased,
    HistoryPage,
    LogAccess,
    LogEntry,
    Marker,
    MembershipChanges,
    Message,
    MessageView,
    Mute,
    NewMessage,
    NewUser,
    NotFound,
    OutboxEntry,
    PayloadPage,
    PushTarget,
    ReceiptOutcome,
    ReceiptResult,
    ReceiptUpdate,
    RestoreConflict,
    SearchPage,
    Store,
    TargetState,
    User,
    ViewPage,
    Webhook,
    encode_attachments,
    entry_payload,
    event_document,
    event_from_document,
    fold_reactions,
    new_message_id,
    now_ms,
    refusal_of,
    require_same_entry,
    restored_conv,
    seq_bound,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 7  # 2: markers and events; 3: membership_log; 4: entry kinds, message state, reactions;
# 5: outbox, push targets, mutes, deliveries, webhooks; 6: the search index; 7: its scope column
BUSY_TIMEOUT_MS = 30_000
_IN_CHUNK = 500  # ids per "IN (...)" query: well under SQLite's bound-parameter limit
ERASE_CHECKPOINT_TIMEOUT_MS = 2_000  # how long a deletion waits for readers to truncate the WAL
MAX_IDLE_CONNECTIONS = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    display_name TEXT,
    avatar TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT,
    owner TEXT,
    created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    conv TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user, conv);
CREATE TABLE IF NOT EXISTS messages (
    conv TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    ts INTEGER NOT NULL,
    attachments TEXT,
    kind TEXT,
    target INTEGER,
    reply_to INTEGER,
    emoji TEXT,
    erased INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv, seq),
    UNIQUE (conv, sender, client_msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_state (
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT,
    edit_seq INTEGER,
    edited_at INTEGER,
    edit_seqs TEXT,
    delete_seq INTEGER,
    deleted_by TEXT,
    deleted_at INTEGER,
    erased_media TEXT,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactions (
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    emoji TEXT NOT NULL,
    user TEXT NOT NULL,
    entry_seq INTEGER NOT NULL,
    group_seq INTEGER NOT NULL,
    PRIMARY KEY (conv, seq, emoji, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS media_refs (
    conv TEXT NOT NULL,
    media_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (conv, media_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('membership_version', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('users_version', 0);
CREATE TABLE IF NOT EXISTS membership_log (
    version INTEGER PRIMARY KEY,
    conv TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS markers (
    conv TEXT NOT NULL,
    user TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS markers_by_user ON markers(user, conv);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    conv TEXT NOT NULL,
    subject TEXT,
    title TEXT,
    recipients TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    user TEXT,
    event TEXT,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS push_targets (
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    platform TEXT NOT NULL,
    token TEXT NOT NULL,
    app_id TEXT,
    preview INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user, device)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS push_targets_by_token ON push_targets(platform, token);
CREATE TABLE IF NOT EXISTS mutes (
    conv TEXT NOT NULL,
    user TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_head ON deliveries(state, order_key, n);
CREATE INDEX IF NOT EXISTS deliveries_by_key ON deliveries(order_key, n);
CREATE INDEX IF NOT EXISTS deliveries_by_age ON deliveries(state, updated_at);
CREATE TABLE IF NOT EXISTS search_docs (
    id INTEGER PRIMARY KEY,
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    words TEXT NOT NULL,
    scope TEXT NOT NULL,
    UNIQUE (conv, seq)
);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(
    words, scope, content='search_docs', content_rowid='id', tokenize='unicode61 remove_diacritics 0'
);
CREATE TABLE IF NOT EXISTS search_backfill (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Columns added to a table after its first release: added in place to older databases (nullable,
# or with a default, so an older chatmq reading the same file still works).
_ADDED_COLUMNS = (
    ("users", "display_name", "TEXT"), ("users", "avatar", "TEXT"),
    # schema 4, entry kinds: NULL kind is a message, as every row written before
    ("messages", "kind", "TEXT"), ("messages", "target", "INTEGER"), ("messages", "reply_to", "INTEGER"),
    ("messages", "emoji", "TEXT"), ("messages", "erased", "INTEGER NOT NULL DEFAULT 0"),
    # retention: where the retained log starts, and the conversation's own policy (NULL: the default)
    ("conversations", "first_seq", "INTEGER NOT NULL DEFAULT 1"), ("conversations", "retention_days", "INTEGER"),
)
_USER_COLUMNS = "id, password_hash, disabled, created_at, display_name, avatar"
_CONV_COLUMNS = "id, title, owner, created_at, last_seq, first_seq, retention_days"
_CONV_ALIASED = ", ".join(f"c.{c.strip()}" for c in _CONV_COLUMNS.split(","))
_MESSAGE_COLUMNS = "conv, seq, id, sender, client_msg_id, body, ts, attachments, kind, target, reply_to, emoji, erased"
_INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_VIEW_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(",")) + (
    ", s.body, s.edit_seq, s.edited_at, s.delete_seq, s.deleted_by, s.deleted_at"
)
_MARKER_COLUMNS = "conv, user, delivered_seq, read_seq, updated_at"


def _payload(row: tuple[Any, ...]) -> dict[str, Any]:
    """``_message(row).to_payload()`` without the ``Message``: 0.2 us instead of 1.7 per entry."""
    conv, seq, msg_id, sender, client_msg_id, body, ts, attachments, kind, target, reply_to, emoji, erased = row
    return entry_payload(conv, seq, msg_id, sender, client_msg_id, body, ts,
                         orjson.loads(attachments) if attachments else (), kind or EntryKind.MESSAGE, target,
                         reply_to, emoji, bool(erased))


def _message(row: sqlite3.Row | tuple[Any, ...]) -> Message:
    conv, seq, msg_id, sender, client_msg_id, body, ts, attachments, kind, target, reply_to, emoji, erased = row
    return Message(
        conv=conv,
        seq=seq,
        id=msg_id,
        sender=sender,
        client_msg_id=client_msg_id,
        body=body,
        ts=ts,
        attachments=tuple(orjson.loads(attachments)) if attachments else (),
        kind=kind or EntryKind.MESSAGE,
        target=target,
        reply_to=reply_to,
        emoji=emoji,
        erased=bool(erased),
    )


def _message_row(message: Message, attachments: str | None) -> tuple[Any, ...]:
    kind = None if message.kind == EntryKind.MESSAGE else str(message.kind)  # NULL: a message (older rows too)
    return (message.conv, message.seq, message.id, message.sender, message.client_msg_id, message.body,
            message.ts, attachments, kind, message.target, message.reply_to, message.emoji, int(message.erased))


def _view(row: tuple[Any, ...], reactions: dict[int, Any]) -> MessageView:
    message = _message(row[:13])
    body, edit_seq, edited_at, delete_seq, deleted_by, deleted_at = row[13:]
    if body is not None and delete_seq is None:
        message = replace(message, body=body)
    return MessageView(
        message=message,
        edited=Change(edit_seq, message.sender, edited_at) if edit_seq is not None and delete_seq is None else None,
        deleted=Change(delete_seq, deleted_by, deleted_at) if delete_seq is not None else None,
        reactions=reactions.get(message.seq, ()),
    )


class SQLiteStore(Store):
    def __init__(self, path: str, *, sync_every_commit: bool = True) -> None:
        """``sync_every_commit=False`` (the notifier's store) skips the fsync on this process's own
        commits (WAL ``synchronous=NORMAL``): they become durable with the next synced commit of any
        process (the bridge's, within milliseconds under load) instead of holding the one write
        lock through an fsync each. Only for writers whose lost last commits are redone: the
        notifier re-dispatches and re-sends them, at least once."""
        self.path = str(Path(path).expanduser())
        self._synchronous = "FULL" if sync_every_commit else "NORMAL"
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        with self._connection() as conn, _write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer chatmq (schema is too new)")
            if version == 6:  # the index without its scope column: built again below
                conn.execute("DROP TABLE IF EXISTS search")
                conn.execute("DROP TABLE IF EXISTS search_docs")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            added = set()
            for table, column, kind in _ADDED_COLUMNS:
                if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    added.add((table, column))
            if ("messages", "kind") in added:
                _index_attachments(conn)
            has_messages = conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is not None
            if version < 7 and has_messages:
                conn.execute("INSERT OR IGNORE INTO search_backfill (id, conv, seq) VALUES (1, '', 0)")
            # an index older than the count may hold removed words: its first compaction runs
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('search_removed', ?)", (int(has_messages),))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._build_search_index()

    def _build_search_index(self) -> None:
        """Index the messages of a database written before the search index, in short write
        transactions (writers in other processes go on between them), resuming where the last
        opener stopped; every process that opens the store meanwhile helps and waits for it."""
        with self._connection() as conn:
            if conn.execute("SELECT 1 FROM search_backfill").fetchone() is None:
                return
            (total,) = conn.execute("SELECT count(*) FROM messages WHERE kind IS NULL").fetchone()
            log.info("search index: building it for the %d messages of %s", total, self.path)
            started, done = time.monotonic(), 0
            report = started + SEARCH_PROGRESS_EVERY_S
            while True:
                with _write(conn):
                    indexed, finished = _backfill_batch(conn, SEARCH_BACKFILL_BATCH)
                done += indexed
                if finished:
                    break
                if time.monotonic() >= report or SEARCH_PROGRESS_EVERY_S == 0:
                    log.info("search index: %d of ~%d messages read (%.0f s)", done, total, time.monotonic() - started)
                    report = time.monotonic() + SEARCH_PROGRESS_EVERY_S
            log.info("search index: built (%d messages in %.1f s)", done, time.monotonic() - started)

    # --- connections ------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")  # erased text is zeroed, not left in free space
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # an error mid-statement: never hand out a dirty connection
                conn.close()
                raise
            self._release(conn)
            raise
        self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    # --- users ------------------------------------------------------------------------------
    def create_user(
        self, user_id: str, password_hash: str, *, display_name: str | None = None, avatar: str | None = None
    ) -> User:
        require_id(user_id, "user id")
        user = User(id=user_id, password_hash=password_hash, disabled=False, created_at=now_ms(),
                    display_name=display_name, avatar=avatar)
        with self._connection() as conn, _write(conn):
            try:
                conn.execute(
                    f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, 0, ?, ?, ?)",
                    (user.id, user.password_hash, user.created_at, display_name, avatar),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"user {user_id!r} already exists") from exc
            _bump_users(conn)
        return user

    def create_users(self, users: Sequence[NewUser]) -> list[bool]:
        for new in users:
            require_id(new.id, "user id")
        created_at = now_ms()
        created = []
        with self._connection() as conn, _write(conn):
            for new in users:
                cur = conn.execute(
                    f"INSERT OR IGNORE INTO users ({_USER_COLUMNS}) VALUES (?, ?, 0, ?, ?, ?)",
                    (new.id, new.password_hash, created_at, new.display_name, new.avatar),
                )
                created.append(cur.rowcount == 1)
            if any(created):
                _bump_users(conn)
        return created

    def get_user(self, user_id: str) -> User | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def get_users(self, user_ids: Sequence[str]) -> list[User]:
        wanted = sorted(set(user_ids))
        found: list[User] = []
        with self._connection() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                rows = conn.execute(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id",
                    chunk,
                )
                found.extend(_user(row) for row in rows)
        return found

    def list_users(self, *, after: str | None = None, limit: int | None = None) -> list[User]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", -1 if limit is None else limit),
            )
            return [_user(row) for row in rows]

    def count_users(self) -> int:
        with self._connection() as conn:
            return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])

    def set_profile(self, user_id: str, display_name: str | None, avatar: str | None) -> None:
        with self._connection() as conn, _write(conn):
            cur = conn.execute(
                "UPDATE users SET display_name = ?, avatar = ? WHERE id = ?", (display_name, avatar, user_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")

    def set_password(self, user_id: str, password_hash: str) -> None:
        self._update_user(user_id, "password_hash", password_hash)

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        self._update_user(user_id, "disabled", int(bool(disabled)))

    def _update_user(self, user_id: str, column: str, value: object) -> None:
        with self._connection() as conn, _write(conn):
            cur = conn.execute(f"UPDATE users SET {column} = ? WHERE id = ?", (value, user_id))
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
            _bump_users(conn)

    def users_version(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'users_version'").fetchone()
        return int(row[0]) if row else 0

    # --- conversations ----------------------------------------------------------------------
    def create_conversation(
        self, conv_id: str, members: Sequence[str], title: str | None = None, owner: str | None = None
    ) -> Conversation:
        require_id(conv_id, "conversation id")
        unique = sorted(set(members))
        created_at = now_ms()
        with self._connection() as conn, _write(conn):
            for user in members:
                if not _user_exists(conn, user):
                    raise NotFound(f"no user {user!r}")
            try:
                conn.execute(
                    "INSERT INTO conversations (id, title, owner, created_at, last_seq)"
                    " VALUES (?, ?, ?, ?, 0)",
                    (conv_id, title, owner, created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"conversation {conv_id!r} already exists") from exc
            conn.executemany(
                "INSERT INTO members (conv, user) VALUES (?, ?)", [(conv_id, u) for u in unique]
            )
            _bump_membership(conn, conv_id)
            _record_event(conn, EVENT_CREATED, conv_id, None, title, unique, created_at)
        return Conversation(id=conv_id, members=tuple(unique), title=title, owner=owner, created_at=created_at)

    def get_conversation(self, conv_id: str) -> Conversation | None:
        with self._connection() as conn, _read(conn):
            row = conn.execute(
                f"SELECT {_CONV_COLUMNS} FROM conversations WHERE id = ?", (conv_id,)
            ).fetchone()
            if row is None:
                return None
            members = [
                r[0] for r in conn.execute("SELECT user FROM members WHERE conv = ? ORDER BY user", (conv_id,))
            ]
        return _conversation(row, members)

    def log_access(self, conv_id: str, user: str) -> LogAccess | None:
        with self._connection() as conn:  # one statement: one consistent snapshot
            row = conn.execute(
                "SELECT last_seq, first_seq, EXISTS (SELECT 1 FROM members WHERE conv = ?1 AND user = ?2)"
                " FROM conversations WHERE id = ?1",
                (conv_id, user),
            ).fetchone()
        return None if row is None else LogAccess(conv_id, row[0], row[1], bool(row[2]))

    def list_conversations(
        self, member: str | None = None, *, after: str | None = None, limit: int | None = None
    ) -> list[Conversation]:
        page = (after or "", -1 if limit is None else limit)
        with self._connection() as conn, _read(conn):
            if member is None:
                rows = conn.execute(
                    f"SELECT {_CONV_COLUMNS} FROM conversations WHERE id > ? ORDER BY id LIMIT ?", page
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_CONV_ALIASED} FROM conversations c"
                    " JOIN members m ON m.conv = c.id WHERE m.user = ? AND c.id > ? ORDER BY c.id LIMIT ?",
                    (member, *page),
                ).fetchall()
            members = _members_of(conn, [row[0] for row in rows], all_convs=member is None and limit is None
                                  and after is None)
        return [_conversation(row, members.get(row[0], [])) for row in rows]

    def count_conversations(self) -> int:
        with self._connection() as conn:
            return int(conn.execute("SELECT count(*) FROM conversations").fetchone()[0])

    def add_member(self, conv_id: str, user_id: str) -> None:
        with self._connection() as conn, _write(conn):
            _require_conversation(conn, conv_id)
            if not _user_exists(conn, user_id):
                raise NotFound(f"no user {user_id!r}")
            cur = conn.execute("INSERT OR IGNORE INTO members (conv, user) VALUES (?, ?)", (conv_id, user_id))
            if cur.rowcount:
                _bump_membership(conn, conv_id)
                _record_change(conn, EVENT_MEMBER_ADDED, conv_id, user_id)

    def remove_member(self, conv_id: str, user_id: str) -> None:
        with self._connection() as conn, _write(conn):
            _require_conversation(conn, conv_id)
            cur = conn.execute("DELETE FROM members WHERE conv = ? AND user = ?", (conv_id, user_id))
            if cur.rowcount:
                _bump_membership(conn, conv_id)
                _record_change(conn, EVENT_MEMBER_REMOVED, conv_id, user_id)

    def set_title(self, conv_id: str, title: str | None) -> None:
        with self._connection() as conn, _write(conn):
            _require_conversation(conn, conv_id)
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conv_id))
            _record_change(conn, EVENT_TITLE_CHANGED, conv_id, None)

    def memberships(self) -> dict[str, frozenset[str]]:
        with self._connection() as conn, _read(conn):
            result: dict[str, set[str]] = {row[0]: set() for row in conn.execute("SELECT id FROM conversations")}
            for conv, user in conn.execute("SELECT conv, user FROM members"):
                result.setdefault(conv, set()).add(user)
        return {conv: frozenset(users) for conv, users in result.items()}

    def membership_version(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'membership_version'").fetchone()
        return int(row[0]) if row else 0

    def membership_changes(self, since: int) -> MembershipChanges | None:
        with self._connection() as conn, _read(conn):
            (version,) = conn.execute("SELECT value FROM meta WHERE key = 'membership_version'").fetchone()
            logged = conn.execute(
                "SELECT version, conv FROM membership_log WHERE version > ? ORDER BY version", (since,)
            ).fetchall()
            if version < since or [v for v, _ in logged] != list(range(since + 1, version + 1)):
                return None  # pruned past ``since``, or a database older than the log
            convs = sorted({conv for _, conv in logged})
            marks = ",".join("?" * len(convs))
            existing = {row[0] for row in conn.execute(f"SELECT id FROM conversations WHERE id IN ({marks})", convs)}
            members: dict[str, set[str]] = {conv: set() for conv in existing}
            for conv, user in conn.execute(f"SELECT conv, user FROM members WHERE conv IN ({marks})", convs):
                members[conv].add(user)
        return MembershipChanges(version, {conv: frozenset(members[conv]) if conv in existing else None
                                           for conv in convs})  # fmt: skip

    # --- message log ------------------------------------------------------------------------
    def append(self, batch: Sequence[NewMessage], *, edit_window_ms: int = 0) -> list[AppendResult]:
        if not batch:
            return []
        encoded = [encode_attachments(item.attachments) for item in batch]  # fail before writing
        results: list[AppendResult] = []
        with self._connection() as conn:
            with _write(conn):
                pending = _PendingRows(conn)
                last_seq: dict[str, int] = {}
                owner: dict[str, str | None] = {}
                for conv in dict.fromkeys(item.conv for item in batch):
                    row = conn.execute("SELECT last_seq, owner FROM conversations WHERE id = ?", (conv,)).fetchone()
                    if row is None:
                        raise NotFound(f"no conversation {conv!r}")
                    last_seq[conv], owner[conv] = row
                first_of: dict[tuple[str, str, str], Message] = {}
                for item, attachments in zip(batch, encoded, strict=True):
                    key = (item.conv, item.sender, item.client_msg_id)
                    original = first_of.get(key)
                    if original is None:
                        stored = conn.execute(
                            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                            " WHERE conv = ? AND sender = ? AND client_msg_id = ?",
                            key,
                        ).fetchone()
                        original = _message(stored) if stored else None
                    if original is not None:
                        first_of[key] = original
                        erased_before = _erased_media(conn, original)
                        results.append(AppendResult(original, duplicate=True, erased_media=erased_before))
                        continue
                    if item.kind in CHANGE_KINDS or item.reply_to is not None:
                        pending.flush()  # the check sees every entry before this one
                        target = _target_state(conn, item)
                        refusal = refusal_of(item, target, last_seq[item.conv], owner[item.conv], edit_window_ms)
                        if refusal is not None:
                            results.append(AppendResult(None, duplicate=False, refusal=refusal))
                            continue
                    seq = last_seq[item.conv] = last_seq[item.conv] + 1
                    message = Message(
                        conv=item.conv, seq=seq, id=new_message_id(), sender=item.sender,
                        client_msg_id=item.client_msg_id, body=item.body, ts=item.ts,
                        attachments=tuple(orjson.loads(attachments)) if attachments else (),
                        kind=item.kind, target=item.target if item.kind in CHANGE_KINDS else None,
                        reply_to=item.reply_to if item.kind == EntryKind.MESSAGE else None, emoji=item.emoji,
                    )  # fmt: skip
                    first_of[key] = message
                    pending.add(message, attachments)
                    erased: tuple[str, ...] = ()
                    if item.kind in CHANGE_KINDS:
                        pending.flush()
                        erased = _apply_change(conn, message)
                    results.append(AppendResult(message, duplicate=False, erased_media=erased))
                pending.flush()
                conn.executemany(
                    "UPDATE conversations SET last_seq = ? WHERE id = ?",
                    [(seq, conv) for conv, seq in last_seq.items()],
                )
                conn.executemany(  # the notifier's work, durable with the entries themselves
                    f"INSERT INTO outbox (kind, conv, seq, user, ts) VALUES ('{OUTBOX_MESSAGE}', ?, ?, ?, ?)",
                    [(r.message.conv, r.message.seq, r.message.sender, r.message.ts) for r in results
                     if r.message is not None and not r.duplicate],
                )
            if any(r.message is not None and r.message.kind == EntryKind.DELETE and not r.duplicate for r in results):
                _truncate_wal(conn)
        return results

    def history(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> HistoryPage:
        rows, has_more = self._history_rows(conv_id, before, after, limit)
        return HistoryPage(messages=[_message(row) for row in rows], has_more=has_more)

    def history_payloads(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> PayloadPage:
        rows, has_more = self._history_rows(conv_id, before, after, limit)
        return PayloadPage(payloads=[_payload(row) for row in rows], has_more=has_more)

    def _history_rows(
        self, conv_id: str, before: int | None, after: int | None, limit: int
    ) -> tuple[list[Any], bool]:
        """A page's rows in ascending seq, and whether more lie beyond it."""
        where, params, newest_first = _page_bounds("", conv_id, before, after, limit)
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where}"
            f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        has_more = len(rows) > limit
        del rows[limit:]
        if newest_first:
            rows.reverse()
        return rows, has_more

    def message_view(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> ViewPage:
        where, params, newest_first = _page_bounds("m.", conv_id, before, after, limit)
        sql = (
            f"SELECT {_VIEW_COLUMNS} FROM messages m"
            " LEFT JOIN message_state s ON s.conv = m.conv AND s.seq = m.seq"
            f" WHERE {where} AND m.kind IS NULL ORDER BY m.seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        with self._connection() as conn, _read(conn):
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            page = rows[:limit]
            reactions: dict[int, Any] = {}
            if page:
                low, high = min(r[1] for r in page), max(r[1] for r in page)
                reactions = fold_reactions(conn.execute(
                    "SELECT seq, emoji, user FROM reactions WHERE conv = ? AND seq BETWEEN ? AND ?"
                    " ORDER BY group_seq, entry_seq",
                    (conv_id, low, high),
                ).fetchall())
        views = [_view(row, reactions) for row in page]
        if newest_first:
            views.reverse()
        return ViewPage(messages=views, has_more=len(rows) > limit)

    def search(self, user: str, query: SearchQuery) -> SearchPage:
        if query.limit < 1:
            raise ValueError(f"limit must be at least 1, got {query.limit}")
        cursor = decode_cursor(query.before, (int,))[0] if query.before is not None else None
        with self._connection() as conn, _read(conn):
            convs = [r[0] for r in conn.execute("SELECT conv FROM members WHERE user = ?", (user,))]
            if query.conv is not None:
                convs = [c for c in convs if c == query.conv]
            if not convs:
                return SearchPage([], [], False)
            # The index itself narrows to the conversations (and the sender) when they are few: it
            # intersects the words' entries with theirs. The join below checks membership again,
            # in the same snapshot, whatever the index was told.
            match = search_match(query.words, convs if len(convs) <= SCOPE_MAX_CONVS else (), query.sender)
            where = ["search MATCH ?", "d.conv IN (SELECT conv FROM members WHERE user = ?)"]
            params: list[Any] = [match, user]
            if query.conv is not None:
                where.append("d.conv = ?")
                params.append(query.conv)
            if query.sender is not None:
                where.append("d.sender = ?")
                params.append(query.sender)
            if cursor is not None:
                where.append("search.rowid < ?")
                params.append(cursor)
            # CROSS JOIN keeps the index outermost: matches are read newest first and the page
            # stops at the limit, rather than reading a member's every message and sorting.
            rows = conn.execute(
                f"SELECT {_VIEW_COLUMNS}, d.id FROM search CROSS JOIN search_docs d ON d.id = search.rowid"
                " CROSS JOIN messages m ON m.conv = d.conv AND m.seq = d.seq"
                " LEFT JOIN message_state s ON s.conv = m.conv AND s.seq = m.seq"
                f" WHERE {' AND '.join(where)} ORDER BY search.rowid DESC LIMIT ?",
                (*params, query.limit + 1),
            ).fetchall()
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return SearchPage([_view(row[:-1], {}) for row in page], [encode_cursor([row[-1]]) for row in page], more)

    def compact_search_index(self) -> int:
        # FTS5 drops a deleted message's words from its segments only when it merges them;
        # "merge" with a negative page count merges every level, a bounded amount per step, until
        # one segment is left (secure_delete zeroes the freed pages, the WAL is then truncated).
        # Nothing removed since the last run: nothing to drop, and no rewrite of the whole index.
        # Each step holds the write lock while it rewrites SEARCH_MERGE_PAGES pages; the pause
        # after it lets the writers queued meanwhile (the bridge's sends) in before the next one:
        # SQLite's busy handler retries on its own schedule, so back-to-back steps would starve them.
        steps = 0
        with self._connection() as conn:
            (pending,) = conn.execute("SELECT value FROM meta WHERE key = 'search_removed'").fetchone()
            if not pending:
                return 0
            while True:
                with _write(conn):
                    before = conn.total_changes
                    conn.execute("INSERT INTO search (search, rank) VALUES ('merge', ?)", (-SEARCH_MERGE_PAGES,))
                    worked = conn.total_changes - before >= 2
                steps += 1
                if not worked:
                    break
                time.sleep(SEARCH_MERGE_PAUSE_S)
            with _write(conn):  # removals made meanwhile stay counted for the next run
                conn.execute("UPDATE meta SET value = max(0, value - ?) WHERE key = 'search_removed'", (pending,))
            _truncate_wal(conn)
        return steps

    def media_attached(self, conv_id: str, media_id: str) -> bool:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM media_refs WHERE conv = ? AND media_id = ? LIMIT 1", (conv_id, media_id)
            ).fetchone()
        return row is not None

    # --- receipts and read state -------------------------------------------------------------
    def apply_receipts(self, updates: Sequence[ReceiptUpdate]) -> list[ReceiptResult]:
        if not updates:
            return []
        results: list[ReceiptResult] = []
        with self._connection() as conn, _write(conn):
            for update in updates:
                row = conn.execute("SELECT last_seq FROM conversations WHERE id = ?", (update.conv,)).fetchone()
                if row is None:
                    results.append(ReceiptResult(ReceiptOutcome.UNKNOWN_CONVERSATION, 0))
                    continue
                last_seq = int(row[0])
                if update.seq > last_seq:
                    results.append(ReceiptResult(ReceiptOutcome.SEQ_AHEAD, last_seq))
                    continue
                current = conn.execute(
                    "SELECT delivered_seq, read_seq FROM markers WHERE conv = ? AND user = ?",
                    (update.conv, update.user),
                ).fetchone()
                delivered, read = current if current else (0, 0)
                moved = update.seq > (read if update.status == "read" else delivered)
                if moved:
                    new_read = max(read, update.seq) if update.status == "read" else read
                    conn.execute(
                        "INSERT INTO markers (conv, user, delivered_seq, read_seq, updated_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (conv, user) DO UPDATE SET"
                        " delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq,"
                        " updated_at = excluded.updated_at",
                        (update.conv, update.user, max(delivered, update.seq), new_read, update.ts),
                    )
                    if update.status == "read":  # may clear notifications on the reader's other devices
                        conn.execute(
                            f"INSERT INTO outbox (kind, conv, seq, user, ts) VALUES ('{OUTBOX_READ}', ?, ?, ?, ?)",
                            (update.conv, update.seq, update.user, update.ts),
                        )
                outcome = ReceiptOutcome.MOVED if moved else ReceiptOutcome.UNCHANGED
                results.append(ReceiptResult(outcome, last_seq))
        return results

    def markers(self, conv_id: str) -> list[Marker]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_MARKER_COLUMNS} FROM markers WHERE conv = ? ORDER BY user", (conv_id,)
            ).fetchall()
        return [Marker(*row) for row in rows]

    def markers_of(self, user_id: str) -> dict[str, Marker]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_MARKER_COLUMNS} FROM markers WHERE user = ?", (user_id,)).fetchall()
        return {row[0]: Marker(*row) for row in rows}

    def count_unread(self, conv_id: str, user_id: str, after_seq: int) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE conv = ? AND seq > ? AND sender != ?"
                " AND kind IS NULL AND erased = 0",
                (conv_id, after_seq, user_id),
            ).fetchone()
        return int(row[0])

    # --- conversation events ------------------------------------------------------------------
    def pending_events(self, limit: int = 500) -> list[ConversationEvent]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, kind, conv, subject, title, recipients, ts FROM events ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [
            ConversationEvent(
                id=row[0], kind=row[1], conv=row[2], subject=row[3], title=row[4],
                recipients=tuple(orjson.loads(row[5])), ts=row[6],
            )
            for row in rows
        ]

    def delete_events(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._connection() as conn, _write(conn):
            conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])


    # --- push targets and mutes ----------------------------------------------------------------
    def put_push_target(self, target: PushTarget) -> PushTarget:
        stored = replace(target, updated_at=now_ms())
        with self._connection() as conn, _write(conn):
            conn.execute(
                "DELETE FROM push_targets WHERE platform = ? AND token = ? AND NOT (user = ? AND device = ?)",
                (stored.platform, stored.token, stored.user, stored.device),
            )
            conn.execute(
                f"INSERT OR REPLACE INTO push_targets ({_TARGET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (stored.user, stored.device, stored.platform, stored.token, stored.app_id, int(stored.preview),
                 stored.updated_at),
            )  # fmt: skip
        return stored

    def push_targets(self, users: Sequence[str]) -> list[PushTarget]:
        wanted = sorted(set(users))
        found: list[PushTarget] = []
        with self._connection() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    f"SELECT {_TARGET_COLUMNS} FROM push_targets WHERE user IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.extend(_push_target(row) for row in rows)
        return sorted(found, key=lambda t: (t.user, t.device))

    def delete_push_target(self, user: str, device: str) -> bool:
        with self._connection() as conn, _write(conn):
            cur = conn.execute("DELETE FROM push_targets WHERE user = ? AND device = ?", (user, device))
        return cur.rowcount > 0

    def delete_push_tokens(self, platform: str, tokens: Sequence[str]) -> int:
        with self._connection() as conn, _write(conn):
            return sum(
                conn.execute("DELETE FROM push_targets WHERE platform = ? AND token = ?", (platform, token)).rowcount
                for token in set(tokens)
            )

    def set_mute(self, conv: str, user: str, until: int | None) -> None:
        with self._connection() as conn, _write(conn):
            if until is None:
                conn.execute("DELETE FROM mutes WHERE conv = ? AND user = ?", (conv, user))
            else:
                conn.execute("INSERT OR REPLACE INTO mutes (conv, user, until) VALUES (?, ?, ?)", (conv, user, until))

    def mute(self, conv: str, user: str) -> int | None:
        with self._connection() as conn:
            row = conn.execute("SELECT until FROM mutes WHERE conv = ? AND user = ?", (conv, user)).fetchone()
        return None if row is None else int(row[0])

    def muted_members(self, conv: str, users: Sequence[str], now: int) -> set[str]:
        wanted = set(users)
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT user FROM mutes WHERE conv = ? AND (until = 0 OR until > ?)", (conv, now)
            ).fetchall()
        return {row[0] for row in rows} & wanted

    # --- the delivery outbox, deliveries and webhook subscriptions -----------------------------
    def pending_outbox(self, limit: int = 500) -> list[OutboxEntry]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, kind, conv, seq, user, event, ts FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [
            OutboxEntry(row[0], row[1], row[2], row[3], row[4], event_from_document(orjson.loads(row[5]))
                        if row[5] else None, row[6])
            for row in rows
        ]  # fmt: skip

    def delete_outbox(self, ids: Sequence[int]) -> None:
        if ids:
            with self._connection() as conn, _write(conn):
                conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        with self._connection() as conn, _write(conn):
            return _insert_deliveries(conn, deliveries, now_ms())

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return _delivery(row) if row else None

    def latest_deliveries(self, order_keys: Sequence[str]) -> dict[str, Delivery]:
        keys = sorted(set(order_keys))
        found: dict[str, Delivery] = {}
        with self._connection() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                rows = conn.execute(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE n IN (SELECT MAX(n) FROM deliveries"
                    f" WHERE order_key IN ({','.join('?' * len(chunk))}) GROUP BY order_key)",
                    chunk,
                ).fetchall()
                found.update((d.order_key, d) for d in map(_delivery, rows))
        return found

    def replace_pending_payload(self, delivery_id: str, payload: dict[str, Any]) -> bool:
        with self._connection() as conn, _write(conn):
            return _replace_pending(conn, delivery_id, payload, now_ms())

    def conversation_deliveries(self, conv: str) -> list[Delivery]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE order_key LIKE ? ESCAPE '\\' ORDER BY n",
                ("%:" + conv.replace("_", "\\_"),),  # ids hold no %: only _, the LIKE wildcard, needs escaping
            ).fetchall()
        return [_delivery(row) for row in rows]

    def apply_dispatch(self, batch: DispatchBatch) -> None:
        now = now_ms()
        with self._connection() as conn, _write(conn):
            conn.executemany(
                "UPDATE deliveries SET payload = ?, updated_at = ? WHERE id = ?",
                [(orjson.dumps(payload).decode(), now, delivery_id) for delivery_id, payload in batch.redactions],
            )
            instead = [c.instead for c in batch.collapses if not _replace_pending(conn, c.delivery_id, c.payload, now)]
            conn.executemany(
                f"UPDATE deliveries SET state = '{DELIVERY_CANCELLED}', updated_at = ?"
                f" WHERE id = ? AND state = '{DELIVERY_PENDING}'",
                [(now, delivery_id) for delivery_id in batch.cancels],
            )
            _insert_deliveries(conn, [*batch.deliveries, *instead], now)
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in batch.consumed])

    def due_deliveries(self, now: int, limit: int = 100, exclude: Sequence[str] = ()) -> list[Delivery]:
        skip = set(exclude)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d WHERE state = '{DELIVERY_PENDING}' AND next_at <= ?"
                f" AND n = (SELECT MIN(n) FROM deliveries h WHERE h.state = '{DELIVERY_PENDING}'"
                " AND h.order_key = d.order_key) ORDER BY n LIMIT ?",
                (now, limit + len(skip)),
            ).fetchall()
        return [d for d in map(_delivery, rows) if d.id not in skip][:limit]

    def record_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        if not attempts:
            return []
        now = now_ms()
        with self._connection() as conn, _write(conn):
            return [
                conn.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, state = ?, next_at = ?, last_error = ?,"
                    " updated_at = ? WHERE id = ? AND version = ?",
                    (a.state, a.next_at, a.error, now, a.delivery_id, a.version),
                ).rowcount > 0
                for a in attempts
            ]

    def set_delivery_state(self, delivery_id: str, state: str, next_at: int | None = None) -> bool:
        with self._connection() as conn, _write(conn):
            cur = conn.execute(
                "UPDATE deliveries SET state = ?, next_at = COALESCE(?, next_at), updated_at = ? WHERE id = ?",
                (state, next_at, now_ms(), delivery_id),
            )
        return cur.rowcount > 0

    def replay_deliveries(self, ids: Sequence[str], now: int) -> int:
        with self._connection() as conn, _write(conn):
            return sum(
                conn.execute(
                    f"UPDATE deliveries SET state = '{DELIVERY_PENDING}', attempts = 0, next_at = ?, last_error = NULL,"
                    " version = version + 1, updated_at = ? WHERE id = ?",
                    (now, now, delivery_id),
                ).rowcount
                for delivery_id in set(ids)
            )

    def list_deliveries(
        self, channel: str | None = None, state: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        where, params = [], []
        for column, value in (("channel", channel), ("state", state), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries{clause} ORDER BY n DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [_delivery(row) for row in rows]

    def prune_deliveries(self, before: int) -> int:
        with self._connection() as conn, _write(conn):
            return conn.execute(
                f"DELETE FROM deliveries WHERE state IN ('{DELIVERED}', '{DELIVERY_CANCELLED}') AND updated_at < ?",
                (before,),
            ).rowcount

    def add_webhook(self, webhook: Webhook) -> Webhook:
        stored = replace(webhook, created_at=webhook.created_at or now_ms())
        with self._connection() as conn, _write(conn):
            try:
                conn.execute(
                    "INSERT INTO webhooks (id, url, secret, events, created_at) VALUES (?, ?, ?, ?, ?)",
                    (stored.id, stored.url, stored.secret, orjson.dumps(list(stored.events)).decode(),
                     stored.created_at),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"webhook {webhook.id!r} already exists") from exc
        return stored

    def webhooks(self) -> list[Webhook]:
        with self._connection() as conn:
            rows = conn.execute("SELECT id, url, secret, events, created_at FROM webhooks ORDER BY id").fetchall()
        return [Webhook(row[0], row[1], row[2], tuple(orjson.loads(row[3])), row[4]) for row in rows]

    def remove_webhook(self, webhook_id: str) -> bool:
        with self._connection() as conn, _write(conn):
            return conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount > 0

    # --- data lifecycle: retention and erasure --------------------------------------------------
    def set_retention(self, conv_id: str, days: int | None) -> None:
        with self._connection() as conn, _write(conn):
            _require_conversation(conn, conv_id)
            conn.execute("UPDATE conversations SET retention_days = ? WHERE id = ?", (days, conv_id))

    def purge_expired(self, conv_id: str, before_ts: int, limit: int) -> Erased:
        with self._connection() as conn:
            with _write(conn):
                row = conn.execute("SELECT first_seq FROM conversations WHERE id = ?", (conv_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no conversation {conv_id!r}")
                first = int(row[0])
                rows = conn.execute("SELECT seq, ts FROM messages WHERE conv = ? AND seq >= ? ORDER BY seq LIMIT ?",
                                    (conv_id, first, limit + 1)).fetchall()  # fmt: skip
                expired: list[int] = []
                for seq, ts in rows[:limit]:
                    if ts >= before_ts:
                        break
                    expired.append(seq)
                more = len(expired) == limit and len(rows) > limit and rows[limit][1] < before_ts
                if not expired:
                    return Erased(first_seq=first)
                low, high = first, expired[-1]
                span = (conv_id, low, high)
                media = tuple(dict.fromkeys(r[0] for r in conn.execute(
                    "SELECT media_id FROM media_refs WHERE conv = ? AND seq BETWEEN ? AND ?", span)))
                kept_edits = [(conv_id, seq) for (edits,) in conn.execute(
                    "SELECT edit_seqs FROM message_state WHERE conv = ? AND seq BETWEEN ? AND ?"
                    " AND edit_seqs IS NOT NULL", span) for seq in orjson.loads(edits) if seq > high]  # fmt: skip
                conn.executemany("UPDATE messages SET body = '', erased = 1 WHERE conv = ? AND seq = ?", kept_edits)
                _unindex_span(conn, *span)
                for table in ("message_state", "reactions", "media_refs", "messages"):
                    conn.execute(f"DELETE FROM {table} WHERE conv = ? AND seq BETWEEN ? AND ?", span)
                conn.execute(f"DELETE FROM outbox WHERE kind = '{OUTBOX_MESSAGE}' AND conv = ? AND seq <= ?",
                             (conv_id, high))
                conn.execute("UPDATE conversations SET first_seq = ? WHERE id = ?", (high + 1, conv_id))
            _truncate_wal(conn)
        return Erased(seqs=tuple(range(low, high + 1)), media=media, first_seq=high + 1, more=more)

    def erase_messages(self, conv_id: str, seqs: Sequence[int], by: str, ts: int) -> Erased:
        erased: list[int] = []
        media: dict[str, None] = {}
        with self._connection() as conn:
            with _write(conn):
                _require_conversation(conn, conv_id)
                for seq in dict.fromkeys(seqs):
                    row = conn.execute(
                        "SELECT m.kind, s.delete_seq FROM messages m LEFT JOIN message_state s"
                        " ON s.conv = m.conv AND s.seq = m.seq WHERE m.conv = ? AND m.seq = ?", (conv_id, seq)
                    ).fetchone()
                    if row is None or row[0] is not None or row[1] is not None:
                        continue  # not in the log, not a message, or deleted already
                    media.update(dict.fromkeys(_erase_message(conn, conv_id, seq, Change(seq, by, ts))))
                    erased.append(seq)
            if erased:
                _truncate_wal(conn)
        return Erased(seqs=tuple(erased), media=tuple(media))

    def messages_of(self, conv_id: str, user: str, *, after: int = 0, limit: int = 500) -> list[int]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT m.seq FROM messages m LEFT JOIN message_state s ON s.conv = m.conv AND s.seq = m.seq"
                " WHERE m.conv = ? AND m.sender = ? AND m.seq > ? AND m.kind IS NULL AND s.delete_seq IS NULL"
                " AND m.erased = 0 ORDER BY m.seq LIMIT ?",
                (conv_id, user, after, limit),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def erase_reactions(self, conv_id: str, user: str) -> int:
        with self._connection() as conn, _write(conn):
            gone = conn.execute("DELETE FROM reactions WHERE conv = ? AND user = ?", (conv_id, user)).rowcount
            conn.execute(
                "UPDATE messages SET body = '', emoji = NULL, erased = 1"
                " WHERE conv = ? AND sender = ? AND kind IN (?, ?) AND erased = 0",
                (conv_id, user, str(EntryKind.REACT), str(EntryKind.UNREACT)),
            )
        return int(gone)

    def forget_user(self, user_id: str) -> list[str]:
        with self._connection() as conn, _write(conn):
            cur = conn.execute("UPDATE users SET disabled = 1, password_hash = '', display_name = NULL, avatar = NULL"
                               " WHERE id = ?", (user_id,))  # fmt: skip
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
            _bump_users(conn)
            for table in ("markers", "mutes", "push_targets"):
                conn.execute(f"DELETE FROM {table} WHERE user = ?", (user_id,))
            left = [r[0] for r in conn.execute("SELECT conv FROM members WHERE user = ? ORDER BY conv", (user_id,))]
            for conv in left:
                conn.execute("DELETE FROM members WHERE conv = ? AND user = ?", (conv, user_id))
                _bump_membership(conn, conv)
                _record_change(conn, EVENT_MEMBER_REMOVED, conv, user_id)
        return left

    def delete_conversation(self, conv_id: str) -> Erased:
        with self._connection() as conn:
            with _write(conn):
                _require_conversation(conn, conv_id)
                media = tuple(dict.fromkeys(r[0] for r in conn.execute(
                    "SELECT media_id FROM media_refs WHERE conv = ?", (conv_id,))))
                members = [r[0] for r in conn.execute("SELECT user FROM members WHERE conv = ?", (conv_id,))]
                _unindex_span(conn, conv_id, 0, MAX_SEQ)
                for table in ("message_state", "reactions", "media_refs", "messages", "markers", "mutes", "members",
                              "outbox"):
                    conn.execute(f"DELETE FROM {table} WHERE conv = ?", (conv_id,))
                for user in members:  # told as for a removal (their clients drop the conversation)
                    _record_event(conn, EVENT_MEMBER_REMOVED, conv_id, user, None, [user], now_ms())
                conn.execute("DELETE FROM deliveries WHERE order_key LIKE ? ESCAPE '\\'",
                             ("%:" + conv_id.replace("_", "\\_"),))
                conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
                _bump_membership(conn, conv_id)
            _truncate_wal(conn)
        return Erased(media=media)

    # --- bulk read and write: full export/import ------------------------------------------------
    def log_entries(self, conv_id: str, *, after: int = 0, limit: int = 500) -> list[LogEntry]:
        columns = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(","))
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {columns}, s.erased_media FROM messages m LEFT JOIN message_state s"
                " ON m.kind = 'delete' AND s.conv = m.conv AND s.seq = m.target"
                " WHERE m.conv = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
                (conv_id, seq_bound(after), limit),
            ).fetchall()
        return [LogEntry(_message(row[:13]), tuple(orjson.loads(row[13])) if row[13] else ()) for row in rows]

    def mutes(self, convs: Sequence[str]) -> list[Mute]:
        wanted = sorted(set(convs))
        found: list[Mute] = []
        with self._connection() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                rows = conn.execute(
                    f"SELECT conv, user, until FROM mutes WHERE conv IN ({','.join('?' * len(chunk))})"
                    " ORDER BY conv, user",
                    chunk,
                )
                found.extend(Mute(*row) for row in rows)
        return found

    def restore_users(self, users: Sequence[User]) -> int:
        for user in users:
            require_id(user.id, "user id")
        with self._connection() as conn, _write(conn):
            added = sum(conn.execute(
                f"INSERT OR IGNORE INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (u.id, u.password_hash, int(u.disabled), u.created_at, u.display_name, u.avatar),
            ).rowcount for u in users)  # fmt: skip
            if added:
                _bump_users(conn)
        return added

    def restore_conversations(self, convs: Sequence[Conversation]) -> int:
        for conv in convs:
            require_id(conv.id, "conversation id")
        added = 0
        with self._connection() as conn, _write(conn):
            for conv in convs:
                for user in conv.members:
                    if not _user_exists(conn, user):
                        raise NotFound(f"no user {user!r} (member of {conv.id!r})")
                changed = conn.execute(  # a purged log starts at first_seq: its entries follow on from there
                    "INSERT OR IGNORE INTO conversations (id, title, owner, created_at, last_seq, first_seq,"
                    " retention_days) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (conv.id, conv.title, conv.owner, conv.created_at, conv.first_seq - 1, conv.first_seq,
                     conv.retention_days),
                ).rowcount
                changed += sum(conn.execute("INSERT OR IGNORE INTO members (conv, user) VALUES (?, ?)",
                                            (conv.id, user)).rowcount for user in conv.members)  # fmt: skip
                if changed:
                    _bump_membership(conn, conv.id)
                    added += 1
        return added

    def restore_entries(self, entries: Sequence[LogEntry]) -> int:
        if not entries:
            return 0
        conv = restored_conv(entries)
        encoded = [encode_attachments(e.message.attachments) for e in entries]  # fail before writing
        added = 0
        with self._connection() as conn, _write(conn):
            row = conn.execute("SELECT last_seq FROM conversations WHERE id = ?", (conv,)).fetchone()
            if row is None:
                raise NotFound(f"no conversation {conv!r}")
            last = int(row[0])
            stored = dict(conn.execute(
                "SELECT seq, id FROM messages WHERE conv = ? AND seq BETWEEN ? AND ?",
                (conv, entries[0].message.seq, entries[-1].message.seq),
            ).fetchall())  # fmt: skip
            pending = _PendingRows(conn)
            for entry, attachments in zip(entries, encoded, strict=True):
                message = entry.message
                if message.seq in stored:
                    require_same_entry(message, stored[message.seq])
                    continue
                if message.seq != last + 1:
                    raise RestoreConflict(f"conversation {conv!r}: entry {message.seq} would leave a gap after "
                                          f"seq {last}")
                pending.add(message, attachments)
                last = message.seq
                added += 1
                if message.kind in CHANGE_KINDS:
                    pending.flush()
                    _apply_change(conn, message)
                    if message.kind == EntryKind.DELETE:
                        conn.execute("UPDATE message_state SET erased_media = ? WHERE conv = ? AND seq = ?",
                                     (orjson.dumps(list(entry.erased_media)).decode(), conv, message.target))
            pending.flush()
            conn.execute("UPDATE conversations SET last_seq = ? WHERE id = ? AND last_seq < ?", (last, conv, last))
        return added

    def restore_markers(self, markers: Sequence[Marker]) -> int:
        with self._connection() as conn, _write(conn):
            return sum(conn.execute(
                f"INSERT INTO markers ({_MARKER_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (conv, user) DO UPDATE SET"
                " delivered_seq = max(delivered_seq, excluded.delivered_seq),"
                " read_seq = max(read_seq, excluded.read_seq), updated_at = max(updated_at, excluded.updated_at)"
                " WHERE excluded.delivered_seq > delivered_seq OR excluded.read_seq > read_seq",
                (m.conv, m.user, m.delivered_seq, m.read_seq, m.updated_at),
            ).rowcount for m in markers)  # fmt: skip

    def restore_push_targets(self, targets: Sequence[PushTarget]) -> int:
        with self._connection() as conn, _write(conn):
            return sum(conn.execute(
                f"INSERT OR IGNORE INTO push_targets ({_TARGET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (t.user, t.device, t.platform, t.token, t.app_id, int(t.preview), t.updated_at),
            ).rowcount for t in targets)  # fmt: skip

    def restore_mutes(self, mutes: Sequence[Mute]) -> int:
        with self._connection() as conn, _write(conn):
            return sum(conn.execute("INSERT OR IGNORE INTO mutes (conv, user, until) VALUES (?, ?, ?)",
                                    (m.conv, m.user, m.until)).rowcount for m in mutes)  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------
    def ping(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the database write lock up front (no upgrade deadlocks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _read(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: several SELECTs that see one consistent snapshot."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _page_bounds(
    alias: str, conv_id: str, before: int | None, after: int | None, limit: int
) -> tuple[str, list[Any], bool]:
    """The WHERE clause and parameters of a history page, and whether it is read newest first (no
    bound or only ``before``: the page nearest the top)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    before, after = seq_bound(before), seq_bound(after)
    where = [f"{alias}conv = ?"]
    params: list[Any] = [conv_id]
    if before is not None:
        where.append(f"{alias}seq < ?")
        params.append(before)
    if after is not None:
        where.append(f"{alias}seq > ?")
        params.append(after)
    return " AND ".join(where), params, after is None


class _PendingRows:
    """New entries not inserted yet: inserted together (one executemany) before anything reads them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._rows: list[tuple[Any, ...]] = []
        self._refs: list[tuple[str, str, int]] = []
        self._indexed: list[Message] = []

    def add(self, message: Message, attachments: str | None) -> None:
        self._rows.append(_message_row(message, attachments))
        self._refs += [(message.conv, media_id, message.seq) for media_id in _media_ids(message.attachments)]
        if message.kind == EntryKind.MESSAGE:
            self._indexed.append(message)

    def flush(self) -> None:
        if self._rows:
            self._conn.executemany(_INSERT_MESSAGE, self._rows)
            self._rows = []
        for message in self._indexed:
            _index_message(self._conn, message.conv, message.seq, message.sender, message.ts, message.body)
        self._indexed = []
        if self._refs:
            self._conn.executemany("INSERT OR IGNORE INTO media_refs (conv, media_id, seq) VALUES (?, ?, ?)",
                                   self._refs)
            self._refs = []


def _media_ids(attachments: Sequence[Any]) -> list[str]:
    return [a["media_id"] for a in attachments if isinstance(a, dict) and isinstance(a.get("media_id"), str)]


def _target_state(conn: sqlite3.Connection, entry: NewMessage) -> TargetState | None:
    """The entry a change or reply names, as it stands (None: the log has no such seq)."""
    seq = entry.target if entry.kind in CHANGE_KINDS else entry.reply_to
    row = conn.execute(
        "SELECT kind, sender, ts, erased FROM messages WHERE conv = ? AND seq = ?", (entry.conv, seq)
    ).fetchone()
    if row is None:
        return None
    kind, sender, ts, erased = row
    mine: frozenset[str] = frozenset()
    if entry.kind in (EntryKind.REACT, EntryKind.UNREACT):
        mine = frozenset(r[0] for r in conn.execute(
            "SELECT emoji FROM reactions WHERE conv = ? AND seq = ? AND user = ?", (entry.conv, seq, entry.sender)
        ))
    return TargetState(kind or EntryKind.MESSAGE, sender, ts, bool(erased), mine)


def _apply_change(conn: sqlite3.Connection, entry: Message) -> tuple[str, ...]:
    """Fold a stored change into its message's state; a deletion returns the media it erased."""
    conv, target = entry.conv, entry.target
    if entry.kind == EntryKind.EDIT:
        conn.execute(
            "INSERT INTO message_state (conv, seq, body, edit_seq, edited_at, edit_seqs)"
            " VALUES (?, ?, ?, ?, ?, json_array(?)) ON CONFLICT (conv, seq) DO UPDATE SET"
            " body = excluded.body, edit_seq = excluded.edit_seq, edited_at = excluded.edited_at,"
            " edit_seqs = json_insert(coalesce(edit_seqs, '[]'), '$[#]', excluded.edit_seq)",
            (conv, target, entry.body, entry.seq, entry.ts, entry.seq),
        )
        _reindex(conn, conv, target, entry.body)
    elif entry.kind == EntryKind.REACT:  # joins the emoji's group, or starts one (at its own seq)
        group = conn.execute("SELECT group_seq FROM reactions WHERE conv = ? AND seq = ? AND emoji = ? LIMIT 1",
                             (conv, target, entry.emoji)).fetchone()
        conn.execute("INSERT INTO reactions (conv, seq, emoji, user, entry_seq, group_seq) VALUES (?, ?, ?, ?, ?, ?)",
                     (conv, target, entry.emoji, entry.sender, entry.seq, group[0] if group else entry.seq))
    elif entry.kind == EntryKind.UNREACT:
        conn.execute("DELETE FROM reactions WHERE conv = ? AND seq = ? AND emoji = ? AND user = ?",
                     (conv, target, entry.emoji, entry.sender))
    elif entry.kind == EntryKind.DELETE:
        assert target is not None
        return _erase_message(conn, conv, target, Change(entry.seq, entry.sender, entry.ts))
    return ()


def _erase_message(conn: sqlite3.Connection, conv: str, seq: int, deletion: Change) -> tuple[str, ...]:
    """Make the message at ``seq`` a tombstone (a deletion, or an operator's erasure): its body and
    attachments and the text of its edits are overwritten, its reactions and media references go.
    Returns the media it attached."""
    (attachments,) = conn.execute("SELECT attachments FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    erased = tuple(dict.fromkeys(_media_ids(orjson.loads(attachments)))) if attachments else ()
    state = conn.execute("SELECT edit_seqs FROM message_state WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    edits = orjson.loads(state[0]) if state and state[0] else []
    conn.executemany("UPDATE messages SET body = '', attachments = NULL, erased = 1 WHERE conv = ? AND seq = ?",
                     [(conv, s) for s in (seq, *edits)])
    conn.execute(
        "INSERT INTO message_state (conv, seq, delete_seq, deleted_by, deleted_at, erased_media)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conv, seq) DO UPDATE SET body = NULL, edit_seq = NULL,"
        " edited_at = NULL, delete_seq = excluded.delete_seq, deleted_by = excluded.deleted_by,"
        " deleted_at = excluded.deleted_at, erased_media = excluded.erased_media",
        (conv, seq, deletion.seq, deletion.by, deletion.ts, orjson.dumps(list(erased)).decode()),
    )
    conn.execute("DELETE FROM reactions WHERE conv = ? AND seq = ?", (conv, seq))
    conn.execute("DELETE FROM media_refs WHERE conv = ? AND seq = ?", (conv, seq))
    unindex(conn, conv, seq)
    return erased


# Search documents are numbered in server-time order (ts * _DOC_IDS_PER_MS + n), so the index's own
# rowid order is newest first across conversations, for live writes and backfilled ones alike.
_DOC_IDS_PER_MS = 1 << 12
_MAX_DOC_TS = 1 << 50  # ms; far beyond any real clock, and ts * 4096 stays inside SQLite's int64
SCOPE_MAX_CONVS = 200  # up to this many conversations a search names them to the index (see search)
SEARCH_BACKFILL_BATCH = 2_000  # messages per write transaction while indexing an older database
SEARCH_PROGRESS_EVERY_S = 5.0  # how often that indexing logs its progress
# Index pages one compaction step rewrites in one write transaction, and the pause between steps
# (docs/benchmarks.md, "Search index compaction": what a send waits while it runs).
SEARCH_MERGE_PAGES = 1_000
SEARCH_MERGE_PAUSE_S = 0.0


def _index_message(conn: sqlite3.Connection, conv: str, seq: int, sender: str, ts: int, body: str) -> None:
    """Add a message's words to the search index (nothing for a message without words, or one
    already indexed)."""
    words = indexed_text(body)
    if not words:
        return
    scope = search_scope(conv, sender)
    base = max(0, min(ts, _MAX_DOC_TS)) * _DOC_IDS_PER_MS
    (last,) = conn.execute(
        "SELECT max(id) FROM search_docs WHERE id >= ? AND id < ?", (base, base + _DOC_IDS_PER_MS)
    ).fetchone()
    doc_id = base if last is None else last + 1
    while True:
        try:
            cur = conn.execute(
                "INSERT INTO search_docs (id, conv, seq, sender, words, scope) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (conv, seq) DO NOTHING",
                (doc_id, conv, seq, sender, words, scope),
            )
        except sqlite3.IntegrityError:  # more than _DOC_IDS_PER_MS in one ms: the next free id
            doc_id += 1
            continue
        break
    if cur.rowcount:
        conn.execute("INSERT INTO search (rowid, words, scope) VALUES (?, ?, ?)", (doc_id, words, scope))


def unindex(conn: sqlite3.Connection, conv: str, seq: int) -> None:
    """Remove a message from the search index (a deletion, an erasure, an expiry): in the
    caller's write transaction, so it is never found once the change is committed."""
    row = conn.execute(
        "DELETE FROM search_docs WHERE conv = ? AND seq = ? RETURNING id, words, scope", (conv, seq)
    ).fetchone()
    if row is not None:
        conn.execute("INSERT INTO search (search, rowid, words, scope) VALUES ('delete', ?, ?, ?)", row)
        _removed_from_index(conn, 1)


def _removed_from_index(conn: sqlite3.Connection, count: int) -> None:
    """Count words left behind in the index's segments, for ``compact_search_index``."""
    if count:
        conn.execute("UPDATE meta SET value = value + ? WHERE key = 'search_removed'", (count,))


def _unindex_span(conn: sqlite3.Connection, conv: str, low: int, high: int) -> None:
    """``unindex`` for every message of a run of seqs (a purge, a deleted conversation)."""
    gone = conn.execute("DELETE FROM search_docs WHERE conv = ? AND seq BETWEEN ? AND ? RETURNING id, words, scope",
                        (conv, low, high)).fetchall()  # fmt: skip
    conn.executemany("INSERT INTO search (search, rowid, words, scope) VALUES ('delete', ?, ?, ?)", gone)
    _removed_from_index(conn, len(gone))


def _reindex(conn: sqlite3.Connection, conv: str, seq: int, body: str) -> None:
    """An edited message is found by its new words only."""
    row = conn.execute("SELECT id, words, scope FROM search_docs WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    words = indexed_text(body)
    if row is not None:
        doc_id, old_words, scope = row
        if old_words == words:
            return
        conn.execute("INSERT INTO search (search, rowid, words, scope) VALUES ('delete', ?, ?, ?)", row)
        _removed_from_index(conn, 1)
        if not words:
            conn.execute("DELETE FROM search_docs WHERE id = ?", (doc_id,))
            return
        conn.execute("UPDATE search_docs SET words = ? WHERE id = ?", (words, doc_id))
        conn.execute("INSERT INTO search (rowid, words, scope) VALUES (?, ?, ?)", (doc_id, words, scope))
        return
    sender, ts = conn.execute("SELECT sender, ts FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    _index_message(conn, conv, seq, sender, ts, body)


def _backfill_batch(conn: sqlite3.Connection, limit: int) -> tuple[int, bool]:
    """Index the next ``limit`` messages of an older database, in (conv, seq) order from where the
    last batch stopped; (how many were read, whether it is finished). Messages written since the
    upgrade index themselves; one already indexed is left as it is."""
    position = conn.execute("SELECT conv, seq FROM search_backfill WHERE id = 1").fetchone()
    if position is None:
        return 0, True
    rows = conn.execute(
        "SELECT m.conv, m.seq, m.sender, m.ts, coalesce(s.body, m.body) FROM messages m"
        " LEFT JOIN message_state s ON s.conv = m.conv AND s.seq = m.seq"
        " WHERE (m.conv, m.seq) > (?, ?) AND m.kind IS NULL AND m.erased = 0 ORDER BY m.conv, m.seq LIMIT ?",
        (*position, limit),
    ).fetchall()
    for row in rows:
        _index_message(conn, *row)
    if len(rows) < limit:
        conn.execute("DELETE FROM search_backfill")
        return len(rows), True
    conn.execute("UPDATE search_backfill SET conv = ?, seq = ? WHERE id = 1", rows[-1][:2])
    return len(rows), False


def _erased_media(conn: sqlite3.Connection, entry: Message) -> tuple[str, ...]:
    """What a stored deletion erased (to finish erasing after a crash); () for other entries."""
    if entry.kind != EntryKind.DELETE:
        return ()
    row = conn.execute(
        "SELECT erased_media FROM message_state WHERE conv = ? AND seq = ?", (entry.conv, entry.target)
    ).fetchone()
    return tuple(orjson.loads(row[0])) if row and row[0] else ()


def _truncate_wal(conn: sqlite3.Connection) -> None:
    """Move every page to the database file and empty the write-ahead log, so text a deletion
    overwrote is not left in older log frames. Waits a little for readers; else the next
    checkpoint does it."""
    conn.execute(f"PRAGMA busy_timeout = {ERASE_CHECKPOINT_TIMEOUT_MS}")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.info("write-ahead log busy after a deletion; erased text leaves it at the next checkpoint")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _index_attachments(conn: sqlite3.Connection) -> None:
    """A database from before entry kinds: record which of its messages attach which media."""
    conn.execute(
        "INSERT OR IGNORE INTO media_refs (conv, media_id, seq)"
        " SELECT m.conv, json_extract(a.value, '$.media_id'), m.seq FROM messages m, json_each(m.attachments) a"
        " WHERE m.attachments IS NOT NULL AND json_type(a.value, '$.media_id') = 'text'"
    )


def _user(row: tuple[Any, ...]) -> User:
    user_id, password_hash, disabled, created_at, display_name, avatar = row
    return User(id=user_id, password_hash=password_hash, disabled=bool(disabled), created_at=created_at,
                display_name=display_name, avatar=avatar)


def _conversation(row: tuple[Any, ...], members: Sequence[str]) -> Conversation:
    conv_id, title, owner, created_at, last_seq, first_seq, retention_days = row
    return Conversation(
        id=conv_id, members=tuple(sorted(members)), title=title, owner=owner, created_at=created_at,
        last_seq=last_seq, first_seq=first_seq, retention_days=retention_days,
    )


def _members_of(conn: sqlite3.Connection, convs: list[str], *, all_convs: bool) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    if all_convs:
        for conv, user in conn.execute("SELECT conv, user FROM members ORDER BY conv, user"):
            members.setdefault(conv, []).append(user)
        return members
    for conv in convs:
        members[conv] = [
            r[0] for r in conn.execute("SELECT user FROM members WHERE conv = ? ORDER BY user", (conv,))
        ]
    return members


def _user_exists(conn: sqlite3.Connection, user_id: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None


def _require_conversation(conn: sqlite3.Connection, conv_id: str) -> None:
    if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone() is None:
        raise NotFound(f"no conversation {conv_id!r}")


def _bump_users(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'users_version'")


def _bump_membership(conn: sqlite3.Connection, conv_id: str) -> None:
    """Next membership version, logged with the conversation it changed (same transaction)."""
    (version,) = conn.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'membership_version' RETURNING value"
    ).fetchone()
    conn.execute("INSERT INTO membership_log (version, conv) VALUES (?, ?)", (version, conv_id))
    if version % MEMBERSHIP_LOG_PRUNE_EVERY == 0:
        conn.execute("DELETE FROM membership_log WHERE version <= ?", (version - MEMBERSHIP_LOG_KEEP,))


def _record_change(conn: sqlite3.Connection, kind: str, conv_id: str, subject: str | None) -> None:
    """An event for the members after the change (and the removed member), in the same transaction."""
    title = conn.execute("SELECT title FROM conversations WHERE id = ?", (conv_id,)).fetchone()[0]
    members = [r[0] for r in conn.execute("SELECT user FROM members WHERE conv = ? ORDER BY user", (conv_id,))]
    if subject is not None and subject not in members:
        members.append(subject)
    _record_event(conn, kind, conv_id, subject, title, members, now_ms())


def _record_event(
    conn: sqlite3.Connection, kind: str, conv_id: str, subject: str | None, title: str | None,
    recipients: Sequence[str], ts: int,
) -> None:  # fmt: skip
    cur = conn.execute(
        "INSERT INTO events (kind, conv, subject, title, recipients, ts) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, conv_id, subject, title, orjson.dumps(list(recipients)).decode(), ts),
    )
    event = ConversationEvent(cur.lastrowid or 0, kind, conv_id, subject, title, tuple(recipients), ts)
    conn.execute(
        f"INSERT INTO outbox (kind, conv, seq, user, event, ts) VALUES ('{OUTBOX_EVENT}', ?, 0, ?, ?, ?)",
        (conv_id, subject, orjson.dumps(event_document(event)).decode(), ts),
    )


_TARGET_COLUMNS = "user, device, platform, token, app_id, preview, updated_at"
_DELIVERY_COLUMNS = (
    "id, channel, target, order_key, payload, state, attempts, next_at, version, created_at, updated_at, last_error, n"
)


def _push_target(row: tuple[Any, ...]) -> PushTarget:
    user, device, platform, token, app_id, preview, updated_at = row
    return PushTarget(user, device, platform, token, app_id, bool(preview), updated_at)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    (delivery_id, channel, target, order_key, payload, state, attempts, next_at, version, created_at, updated_at,
     last_error, n) = row  # fmt: skip
    return Delivery(delivery_id, channel, target, order_key, orjson.loads(payload), state, attempts, next_at, version,
                    created_at, updated_at, last_error, n)  # fmt: skip


def _insert_deliveries(conn: sqlite3.Connection, deliveries: Sequence[Delivery], now: int) -> int:
    return sum(
        conn.execute(
            "INSERT OR IGNORE INTO deliveries (id, channel, target, order_key, payload, state, attempts,"
            " next_at, version, created_at, updated_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (d.id, d.channel, d.target, d.order_key, orjson.dumps(d.payload).decode(), d.state, d.attempts,
             d.next_at, d.version, now, now, d.last_error),
        ).rowcount
        for d in deliveries
    )  # fmt: skip


def _replace_pending(conn: sqlite3.Connection, delivery_id: str, payload: dict[str, Any], now: int) -> bool:
    return conn.execute(
        "UPDATE deliveries SET payload = ?, version = version + 1, updated_at = ?"
        f" WHERE id = ? AND state = '{DELIVERY_PENDING}'",
        (orjson.dumps(payload).decode(), now, delivery_id),
    ).rowcount > 0
