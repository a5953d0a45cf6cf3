"""The client's local state: unacked sends and per-conversation cursors, in one SQLite file.

SQLite (stdlib) rather than a hand-rolled file format: a write is atomic and durable, so a crash
between "message queued" and "message acked" never loses or half-writes an entry. Without a path
the same code runs on an in-memory database, so the outbox survives reconnects either way.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    owner TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    conv TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (owner, client_msg_id)
);
CREATE TABLE IF NOT EXISTS cursors (
    owner TEXT NOT NULL,
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (owner, conv)
);
"""


@dataclass(frozen=True, slots=True)
class QueuedSend:
    client_msg_id: str
    conv: str
    payload: dict[str, object]
    created: float


class LocalState:
    """Thread-safe; ``owner`` (user id) keeps several accounts apart if they share one file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        target = str(self.path) if self.path is not None else ":memory:"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def queue_send(self, owner: str, item: QueuedSend) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?, ?)",
                (owner, item.client_msg_id, item.conv, orjson.dumps(item.payload), item.created),
            )

    def remove_send(self, owner: str, client_msg_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE owner = ? AND client_msg_id = ?", (owner, client_msg_id))

    def queued_sends(self, owner: str) -> list[QueuedSend]:
        with self._lock:
            rows = self._db.execute(
                "SELECT client_msg_id, conv, payload, created FROM outbox WHERE owner = ? ORDER BY created, rowid",
                (owner,),
            ).fetchall()
        return [QueuedSend(cmid, conv, orjson.loads(payload), created) for cmid, conv, payload, created in rows]

    def cursor(self, owner: str, conv: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE owner = ? AND conv = ?", (owner, conv)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, owner: str, conv: str, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT (owner, conv) DO UPDATE SET seq = excluded.seq "
                "WHERE excluded.seq > cursors.seq",
                (owner, conv, seq),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
