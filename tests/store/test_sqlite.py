"""What only the embedded store has to prove: durability across reopen and correct seqs when
several threads and processes write the same file at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from chatmq.core.store import open_store
from chatmq.core.store.base import AppendResult
from chatmq.core.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.store.helpers import msg, seed

pytestmark = pytest.mark.timeout(60)


def test_settings_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "chatmq.db"  # parent directories are created
    store = SQLiteStore(str(path))
    with store._connection() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: an ack means durable
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
    SQLiteStore(str(path)).close()  # opening an existing file is idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.get_user("alice")


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "chatmq.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteStore(str(path))


def test_data_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chatmq.db'}"
    store = open_store(url)
    seed(store)
    store.add_member("general", "carol")
    version = store.membership_version()
    written = store.append([msg("general", "alice", "c1", body="persist ✓", attachments=({"k": "v"},))])
    store.close()

    reopened = open_store(url)
    assert isinstance(reopened, SQLiteStore)
    assert [u.id for u in reopened.list_users()] == ["alice", "bob", "carol"]
    assert reopened.get_conversation("general").members == ("alice", "bob", "carol")  # type: ignore[union-attr]
    assert reopened.membership_version() == version
    assert reopened.history("general").messages == [written[0].message]
    again = reopened.append([msg("general", "alice", "c1"), msg("general", "alice", "c2")])
    assert [(r.message.seq, r.duplicate) for r in again] == [(1, True), (2, False)]
    reopened.close()


def test_large_batch_is_one_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "chatmq.db"))
    seed(store, convs=("a", "b"))
    batch = [msg("a" if i % 3 else "b", "alice", f"c{i}") for i in range(500)]
    results = store.append(batch)
    assert [r.message.seq for r in results if r.message.conv == "b"] == list(range(1, 168))
    assert store.get_conversation("a").last_seq == 333  # type: ignore[union-attr]
    store.close()


def _check_log(path: Path, results: list[AppendResult], unique_ids: int) -> None:
    store = SQLiteStore(str(path))
    history = store.history("general", limit=10_000).messages
    store.close()
    assert [m.seq for m in history] == list(range(1, unique_ids + 1))  # gapless, each seq once
    assert len({(m.sender, m.client_msg_id) for m in history}) == unique_ids
    by_key = {(m.sender, m.client_msg_id): m for m in history}
    for result in results:  # every writer was told the stored truth, duplicate or not
        assert by_key[(result.message.sender, result.message.client_msg_id)] == result.message
    assert sum(not r.duplicate for r in results) == unique_ids


def test_threads_on_two_instances_get_gapless_seqs(tmp_path: Path) -> None:
    path = tmp_path / "chatmq.db"
    stores = [SQLiteStore(str(path)), SQLiteStore(str(path))]
    seed(stores[0])
    results: list[AppendResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def writer(index: int) -> None:
        store = stores[index % 2]
        sender = ("alice", "bob", "carol")[index // 2]  # each sender writes through both instances
        try:
            start.wait()
            for batch_no in range(20):
                # half the client ids are shared by two writers of the same sender: a race to store them
                batch = [msg("general", sender, f"shared-{batch_no}-{i}") for i in range(3)]
                batch += [msg("general", sender, f"own{index}-{batch_no}-{i}") for i in range(3)]
                got = store.append(batch)
                with lock:
                    results.extend(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not errors, errors
    for store in stores:
        store.close()
    keys = {(r.message.sender, r.message.client_msg_id) for r in results}
    _check_log(path, results, unique_ids=len(keys))


def _process_writer(path: str, index: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = SQLiteStore(path)
    results: list[AppendResult] = []
    for batch_no in range(15):
        batch = [msg("general", "alice", f"shared-{batch_no}-{i}") for i in range(2)]
        batch += [msg("general", "alice", f"p{index}-{batch_no}-{i}") for i in range(3)]
        results.extend(store.append(batch))
    store.close()
    queue.put([(r.message.sender, r.message.client_msg_id, r.message.seq, r.message.id, r.duplicate)
               for r in results])


def test_processes_get_gapless_seqs(tmp_path: Path) -> None:
    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    seed(store)
    store.close()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_process_writer, args=(str(path), i, queue)) for i in range(3)]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=50) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    rows = [row for report in reports for row in report]
    check = SQLiteStore(str(path))
    history = check.history("general", limit=10_000).messages
    check.close()
    assert [m.seq for m in history] == list(range(1, 15 * 2 + 3 * 15 * 3 + 1))
    by_key = {(m.sender, m.client_msg_id): m for m in history}
    for sender, client_msg_id, seq, msg_id, _duplicate in rows:
        assert (by_key[(sender, client_msg_id)].seq, by_key[(sender, client_msg_id)].id) == (seq, msg_id)
    assert sum(not row[4] for row in rows) == len(history)


def test_profile_columns_are_added_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY, password_hash TEXT NOT NULL,"
                 " disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO users VALUES ('alice', 'h', 0, 1)")
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    try:
        alice = store.get_user("alice")
        assert alice is not None and alice.display_name is None and alice.password_hash == "h"
        store.set_profile("alice", "Alice", "m1")
        assert store.get_user("alice").display_name == "Alice"  # type: ignore[union-attr]
    finally:
        store.close()
    SQLiteStore(str(path)).close()  # opening again finds the columns there


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # the database, its WAL and SHM


def test_a_delete_erases_the_text_from_the_files(tmp_path: Path) -> None:
    """Not only hidden: the deleted message's text, and its edit's, leave the database file and
    its write-ahead log (secure_delete zeroes the old bytes; the WAL is checkpointed and truncated)."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import NewMessage

    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    seed(store)
    long_body = "x" * 4000 + "SECRET-ORIGINAL-7f3a"  # longer than a page: kept in overflow pages
    store.append([msg("general", "alice", "m1", body=long_body),
                  msg("general", "bob", "m2", body="KEEP-THIS-ONE")])
    store.append([NewMessage("general", "alice", "e1", "SECRET-EDITED-9c1d", 1, kind=EntryKind.EDIT, target=1)])
    with store._connection() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything so far is in the main file too
    assert b"SECRET-ORIGINAL-7f3a" in _file_bytes(path) and b"SECRET-EDITED-9c1d" in _file_bytes(path)
    (deleted,) = store.append([NewMessage("general", "alice", "d1", "", 2, kind=EntryKind.DELETE, target=1)])
    assert deleted.refusal is None
    content = _file_bytes(path)
    assert b"SECRET-ORIGINAL-7f3a" not in content and b"SECRET-EDITED-9c1d" not in content
    assert b"KEEP-THIS-ONE" in content
    store.close()


def test_a_database_from_before_entry_kinds_is_upgraded(tmp_path: Path) -> None:
    """Schema 3 files (messages without kind, target, ...) open, keep their messages and their
    attachments count for media_attached."""
    path = tmp_path / "chatmq.db"
    raw = sqlite3.connect(path)
    raw.executescript(
        """
        CREATE TABLE users (id TEXT PRIMARY KEY, password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
                            created_at INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT, owner TEXT, created_at INTEGER NOT NULL,
                                    last_seq INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE messages (conv TEXT NOT NULL REFERENCES conversations(id), seq INTEGER NOT NULL,
            id TEXT NOT NULL, sender TEXT NOT NULL, client_msg_id TEXT NOT NULL, body TEXT NOT NULL,
            ts INTEGER NOT NULL, attachments TEXT, PRIMARY KEY (conv, seq), UNIQUE (conv, sender, client_msg_id)
        ) WITHOUT ROWID;
        INSERT INTO users VALUES ('alice', 'h', 0, 1);
        INSERT INTO conversations VALUES ('general', NULL, NULL, 1, 2);
        INSERT INTO messages VALUES ('general', 1, 'id1', 'alice', 'c1', 'old one', 10, NULL);
        INSERT INTO messages VALUES ('general', 2, 'id2', 'alice', 'c2', 'with a file', 11,
            '[{"media_id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mime":"text/plain","size":1}]');
        PRAGMA user_version = 3;
        """
    )
    raw.close()
    store = SQLiteStore(str(path))
    assert [m.body for m in store.history("general").messages] == ["old one", "with a file"]
    assert [v.message.body for v in store.message_view("general").messages] == ["old one", "with a file"]
    assert store.media_attached("general", "a" * 32)
    assert store.count_unread("general", "bob", 0) == 2
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import NewMessage

    (edited,) = store.append([NewMessage("general", "alice", "e1", "new one", 12, kind=EntryKind.EDIT, target=1)])
    assert edited.message is not None and edited.message.seq == 3
    assert store.message_view("general").messages[0].message.body == "new one"
    store.close()


def test_a_deleted_messages_words_leave_the_files_when_the_index_is_compacted(tmp_path: Path) -> None:
    """A deletion takes the message out of the search index at once (never found again, and the
    index's row with its words is zeroed); FTS5 keeps the words in older index segments until they
    are merged, which compact_search_index does in short steps."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.search import SearchQuery
    from chatmq.core.store.base import NewMessage

    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    seed(store)
    store.append([msg("general", "bob", f"f{i}", body=f"filler keepword {i}") for i in range(300)])
    store.append([msg("general", "alice", "m1", body="zebracorn quokkafish")])
    (secret,) = store.search("bob", SearchQuery(("zebracorn",))).messages
    store.append([NewMessage("general", "alice", "d1", "", 2, kind=EntryKind.DELETE, target=secret.message.seq)])
    assert store.search("bob", SearchQuery(("quokkafish",))).messages == []
    with store._connection() as conn:
        assert conn.execute("SELECT count(*) FROM search_docs WHERE words LIKE '%zebracorn%'").fetchone() == (0,)
    assert b"zebracorn" in _file_bytes(path)  # still in an index segment: why compaction exists
    assert store.compact_search_index() >= 2
    content = _file_bytes(path)
    assert b"zebracorn" not in content and b"quokkafish" not in content and b"keepword" in content
    assert len(store.search("bob", SearchQuery(("keepword",), limit=100)).messages) == 100
    store.close()


def test_an_older_database_gets_its_search_index_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema 5 file (no search tables) is indexed on open, in batches that resume where the
    last one stopped, with progress in the log; edits count, deletions and changes do not."""
    import logging

    from chatmq.core.protocol import EntryKind
    from chatmq.core.search import SearchQuery
    from chatmq.core.store import sqlite as sqlite_module
    from chatmq.core.store.base import NewMessage

    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    seed(store, ("general", "random"))
    store.append([NewMessage(conv, "alice", f"{conv}-{i}", f"word{i % 3} in {conv}", 1000 + i)
                  for i in range(10) for conv in ("general", "random")])  # fmt: skip
    store.append([NewMessage("general", "alice", "e1", "edited words", 5000, kind=EntryKind.EDIT, target=1),
                  NewMessage("general", "alice", "d1", "", 5001, kind=EntryKind.DELETE, target=3)])  # fmt: skip
    store.close()
    raw = sqlite3.connect(path)
    raw.executescript("DROP TABLE search; DROP TABLE search_docs; DROP TABLE search_backfill;"
                      "PRAGMA user_version = 5;")
    raw.close()

    monkeypatch.setattr(sqlite_module, "SEARCH_BACKFILL_BATCH", 3)
    monkeypatch.setattr(sqlite_module, "SEARCH_PROGRESS_EVERY_S", 0)
    with caplog.at_level(logging.INFO, logger="chatmq.core.store.sqlite"):
        store = SQLiteStore(str(path))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("search index:")]
    assert progress[0].startswith("search index: building it for the 20 messages")
    assert len(progress) >= 5 and progress[-1].startswith("search index: built (19 messages")
    found = store.search("bob", SearchQuery(("word0",), limit=50)).messages
    assert sorted((v.message.conv, v.message.seq) for v in found) == [
        ("general", 4), ("general", 7), ("general", 10), ("random", 1), ("random", 4), ("random", 7),
        ("random", 10)]  # general 1 was edited; general 3 deleted (word0 at seqs 1, 4, 7, 10)
    assert [v.message.ts for v in found] == sorted((v.message.ts for v in found), reverse=True)
    assert [v.message.seq for v in store.search("bob", SearchQuery(("edited",))).messages] == [1]
    store.append([NewMessage("random", "bob", "new", "word0 later", 9000)])
    assert store.search("bob", SearchQuery(("word0",))).messages[0].message.body == "word0 later"
    store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chatmq.core.store.sqlite"):
        SQLiteStore(str(path)).close()  # built: opening again does nothing
    assert not [r for r in caplog.records if r.getMessage().startswith("search index:")]


def test_search_reads_the_index_newest_first_without_sorting(tmp_path: Path) -> None:
    from chatmq.core.search import SearchQuery

    store = SQLiteStore(str(tmp_path / "chatmq.db"))
    seed(store)
    with store._connection() as conn:
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        try:
            store._idle.append(conn)
            store.search("bob", SearchQuery(("x",), conv="general", sender="alice", limit=5))
        finally:
            conn.set_trace_callback(None)
        (sql,) = [s for s in traced if "MATCH" in s]
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert plan.startswith("SCAN search VIRTUAL TABLE") and "TEMP B-TREE" not in plan, plan
    store.close()


def test_a_schema_6_search_index_is_built_again_with_its_scope(tmp_path: Path) -> None:
    from chatmq.core.search import SearchQuery

    path = tmp_path / "chatmq.db"
    store = SQLiteStore(str(path))
    seed(store)
    store.append([msg("general", "alice", "a", body="scoped words")])
    store.close()
    raw = sqlite3.connect(path)
    raw.executescript("DROP TABLE search; DROP TABLE search_docs;"
                      "CREATE TABLE search_docs (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
                      " sender TEXT NOT NULL, words TEXT NOT NULL, UNIQUE (conv, seq));"
                      "CREATE VIRTUAL TABLE search USING fts5(words, content='search_docs', content_rowid='id');"
                      "PRAGMA user_version = 6;")  # fmt: skip
    raw.close()
    store = SQLiteStore(str(path))
    assert [v.message.body for v in store.search("bob", SearchQuery(("scoped",), sender="alice")).messages] == [
        "scoped words"]
    store.close()


def test_a_member_of_many_conversations_is_checked_by_the_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above SCOPE_MAX_CONVS conversations the index is not told them; the join still keeps the
    results to the member's conversations, newest first."""
    from chatmq.core.search import SearchQuery
    from chatmq.core.store import sqlite as sqlite_module
    from chatmq.core.store.base import NewMessage

    store = SQLiteStore(str(tmp_path / "chatmq.db"))
    seed(store, ("general", "random"))
    store.create_conversation("secret", ["carol"])
    store.append([NewMessage(conv, "alice" if conv != "secret" else "carol", f"{conv}-{i}", "topic here", 10 * i + n)
                  for i in range(5) for n, conv in enumerate(("general", "random", "secret"))])  # fmt: skip
    scoped = store.search("bob", SearchQuery(("topic",), limit=100)).messages
    monkeypatch.setattr(sqlite_module, "SCOPE_MAX_CONVS", 1)
    joined = store.search("bob", SearchQuery(("topic",), limit=100)).messages
    assert [(v.message.conv, v.message.seq) for v in joined] == [(v.message.conv, v.message.seq) for v in scoped]
    assert len(joined) == 10 and {v.message.conv for v in joined} == {"general", "random"}
    assert [v.message.ts for v in joined] == sorted((v.message.ts for v in joined), reverse=True)
    store.close()
