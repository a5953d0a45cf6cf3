"""The search index's upkeep in the embedded store: FTS5 keeps the words of removed messages in its
older segments until it merges them, so the retention job and every erasure compact the index
(chatmq.core.lifecycle). What is purged, erased or deleted is never found and leaves the files,
and a log that keeps turning over keeps an index the size of what it retains."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmq.core.lifecycle import DAY_MS, Lifecycle
from chatmq.core.protocol import EntryKind
from chatmq.core.search import SearchQuery
from chatmq.core.store.base import NewMessage
from chatmq.core.store.sqlite import SQLiteStore
from tests.store.helpers import TS, seed
from tests.store.test_sqlite import _file_bytes

pytestmark = pytest.mark.timeout(120)


def index_bytes(store: SQLiteStore) -> int:
    with store._connection() as conn:
        return int(conn.execute("SELECT coalesce(sum(length(block)), 0) FROM search_data").fetchone()[0])


def found(store: SQLiteStore, word: str) -> int:
    return len(store.search("alice", SearchQuery((word,), limit=100)).messages)


def test_compaction_runs_only_when_words_left_the_index(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "chatmq.db"))
    try:
        seed(store)
        assert store.compact_search_index() == 0, "a new database: nothing to drop"
        store.append([NewMessage("general", "alice", f"m{i}", f"words of {i}", TS + i) for i in range(50)])
        assert store.compact_search_index() == 0, "appends leave nothing behind: no rewrite"
        store.append([NewMessage("general", "alice", "e1", "other words", TS + 60, kind=EntryKind.EDIT, target=1)])
        assert store.compact_search_index() >= 1, "an edit's old words are left behind"
        assert store.compact_search_index() == 0
        store.append([NewMessage("general", "alice", "d1", "", TS + 61, kind=EntryKind.DELETE, target=2)])
        assert store.compact_search_index() >= 1
        store.purge_expired("general", TS + 10, 100)
        assert store.compact_search_index() >= 1
        assert store.compact_search_index() == 0
        with store._connection() as conn:  # a database from before the count: compacted once
            conn.execute("DELETE FROM meta WHERE key = 'search_removed'")
    finally:
        store.close()
    store = SQLiteStore(str(tmp_path / "chatmq.db"))
    try:
        assert store.compact_search_index() >= 1
        assert store.compact_search_index() == 0
    finally:
        store.close()


def test_the_retention_pass_keeps_the_index_the_size_of_what_it_retains(tmp_path: Path) -> None:
    """Twenty days of a busy conversation under a one-day policy, a retention pass a day: every
    purged day's words are gone from search and from the files, and the index stays the size of one
    day (without the compaction FTS5's own merging lets it reach 2 to 8 times that)."""
    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    try:
        seed(store)
        store.set_retention("general", 1)
        lifecycle = Lifecycle(store)
        sizes = []
        for day in range(20):
            start = TS + day * DAY_MS
            store.append([NewMessage("general", "bob", f"d{day}-{i}", f"day{day}mark note {i} of the day {day * 7 + i}",
                                     start + i * 1000) for i in range(500)])
            report = lifecycle.purge_expired(0, now=start + DAY_MS - 1)  # yesterday's messages expire
            assert report.purged == (500 if day else 0)
            assert report.compaction_steps >= (1 if day else 0)
            sizes.append(index_bytes(store))
            assert found(store, f"day{day}mark") == 100
            if day:
                assert found(store, f"day{day - 1}mark") == 0
        content = _file_bytes(path)
        assert all(f"day{day}mark".encode() not in content for day in range(19)), "purged words left the files"
        assert f"day{19}mark".encode() in content
        assert max(sizes[1:]) <= 1.25 * sizes[0], f"the index grew: {sizes}"
    finally:
        store.close()


def test_an_erasure_takes_the_words_out_of_the_files(tmp_path: Path) -> None:
    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    try:
        seed(store, ("general", "side"))
        store.append([NewMessage("general", "carol" if i % 2 else "bob", f"g{i}",
                                 f"{'carolsecret' if i % 2 else 'bobnote'} filler {i}", TS + i) for i in range(400)])
        store.add_member("general", "carol")
        store.append([NewMessage("side", "alice", f"s{i}", f"sideroomword {i}", TS + i) for i in range(300)])
        store.append([NewMessage("general", "alice", "r1", "redactme now", TS + 500)])
        assert b"carolsecret" in _file_bytes(path) and b"sideroomword" in _file_bytes(path)
        store.compact_search_index()  # the words sit in one merged segment, as in a long-lived index

        lifecycle = Lifecycle(store)
        lifecycle.erase_user("carol")
        lifecycle.delete_conversation("side")
        (redacted,) = store.search("alice", SearchQuery(("redactme",))).messages
        lifecycle.redact("general", [redacted.message.seq])

        assert found(store, "carolsecret") == found(store, "redactme") == 0
        content = _file_bytes(path)
        for word in (b"carolsecret", b"sideroomword", b"redactme"):
            assert word not in content, f"{word!r} is still in the files"
        assert b"bobnote" in content and found(store, "bobnote") == 100
    finally:
        store.close()
