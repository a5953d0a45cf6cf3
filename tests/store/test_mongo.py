"""MongoDB-only behaviour: opening by URL, the durable write concern and losing a client-id race."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymongo.errors import PyMongoError

from chatmq.core.netutil import free_port
from chatmq.core.store import open_store
from chatmq.core.store.base import Store
from chatmq.core.store.mongo import DURABLE, MongoStore
from tests.store.helpers import msg, seed

pytestmark = pytest.mark.timeout(30)


def test_open_store_mongomock_and_durable_write_concern() -> None:
    store = open_store("mongomock://chatmq_unit")
    assert isinstance(store, MongoStore)
    assert store._messages.write_concern == DURABLE  # an ack means journaled on a majority
    names = {index["name"] for index in store._messages.list_indexes()}
    assert {"conv_seq", "conv_sender_client_msg_id"} <= names
    store.ping()
    store.close()


def test_unreachable_server_fails_clearly() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/chatmq?serverSelectionTimeoutMS=200"
    with pytest.raises(PyMongoError):
        MongoStore.from_url(url)


def test_losing_a_race_for_a_client_id_returns_the_winner() -> None:
    """Another writer stores the same client id between our duplicate check and our insert."""
    store = MongoStore.mongomock("race")
    seed(store)
    winner = store.append([msg("general", "alice", "c1", body="winner")])[0].message
    store._stored_originals = lambda batch: {}  # type: ignore[method-assign]  # the check saw nothing
    results = store.append([msg("general", "alice", "c0"), msg("general", "alice", "c1", body="loser"),
                            msg("general", "alice", "c2"), msg("general", "alice", "c1")])
    assert [(r.message.seq, r.duplicate) for r in results] == [(2, False), (1, True), (4, False), (1, True)]
    assert results[1].message == winner
    history = store.history("general").messages
    # 3 was reserved for the loser: a tombstone keeps the log gapless
    assert [(m.seq, m.client_msg_id) for m in history] == [(1, "c1"), (2, "c0"), (3, "hole-3"), (4, "c2")]
    assert (history[2].sender, history[2].erased, history[2].body) == ("@bridge", True, "")
    store.close()


class _Crash(Exception):
    pass


def _crash_before_the_insert(store: MongoStore) -> Callable[[], None]:
    """Make the next insert fail as a process dying after the seq reservation would; returns undo."""
    collection = store._messages
    real = collection.insert_many

    def crash(*args: object, **kwargs: object) -> None:
        raise _Crash

    collection.insert_many = crash  # type: ignore[method-assign]

    def undo() -> None:
        collection.insert_many = real  # type: ignore[method-assign]

    return undo


@pytest.mark.parametrize("restarted", [False, True], ids=["same-writer", "new-process"])
def test_seqs_reserved_and_never_stored_become_tombstones(store: Store, restarted: bool) -> None:
    """A writer dies between reserving seqs 2..3 and storing their messages (never acked). The
    next writer, the same store or a restarted process, fills 2..3 with tombstones before its own
    message: the log stays gapless and a client's strict sequencer never waits for 2 forever.
    (mongomock, and a real MongoDB when CHATMQ_TEST_MONGO_URL is set; SQLite reserves and inserts
    in one transaction, so it has no such hole.)"""
    if not isinstance(store, MongoStore):
        pytest.skip("SQLite reserves and stores a seq in one transaction")
    seed(store)
    store.append([msg("general", "alice", "m1")])
    undo = _crash_before_the_insert(store)
    with pytest.raises(_Crash):
        store.append([msg("general", "alice", "m2"), msg("general", "bob", "m3")])
    undo()
    writer = MongoStore(store._db) if restarted else store
    result = writer.append([msg("general", "alice", "m2")])[0]  # the sender's resend
    assert (result.message.seq, result.duplicate) == (4, False)
    history = writer.history("general").messages
    assert [(m.seq, m.client_msg_id, m.erased) for m in history] == [
        (1, "m1", False), (2, "hole-2", True), (3, "hole-3", True), (4, "m2", False)]
    assert writer.append([msg("general", "bob", "m5")])[0].message.seq == 5
    assert [m.seq for m in writer.history("general").messages] == [1, 2, 3, 4, 5]


def test_a_crash_between_a_change_and_its_state_is_repaired_by_the_resend() -> None:
    """Without a transaction the entry is stored before its message's state is updated. If the
    bridge dies in between, nothing was acked, the broker redelivers the send, and the duplicate
    applies the change again: the view ends up as if nothing had happened."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import NewMessage

    store = MongoStore.mongomock("crash-state")
    seed(store)
    store.append([msg("general", "alice", "m1", body="v1")])
    changes = [
        NewMessage("general", "alice", "e1", "v2", 1, kind=EntryKind.EDIT, target=1),
        NewMessage("general", "bob", "r1", "👍", 2, kind=EntryKind.REACT, target=1, emoji="👍"),
    ]
    real = store._apply_change
    store._apply_change = lambda entry: (_ for _ in ()).throw(OSError("killed"))  # type: ignore[method-assign]
    for change in changes:
        with pytest.raises(OSError):
            store.append([change])
    (view,) = store.message_view("general").messages
    assert view.message.body == "v1" and view.reactions == ()  # entries stored, state not yet
    store._apply_change = real  # type: ignore[method-assign]
    assert [r.duplicate for r in store.append(changes)] == [True, True]  # the redelivery
    (view,) = store.message_view("general").messages
    assert view.message.body == "v2" and [r.users for r in view.reactions] == [("bob",)]
    assert [m.seq for m in store.history("general").messages] == [1, 2, 3]


def test_a_stale_duplicate_does_not_undo_a_later_change() -> None:
    """Re-applying on duplicates is safe: the latest operation by seq wins."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import NewMessage

    store = MongoStore.mongomock("stale-dup")
    seed(store)
    store.append([msg("general", "alice", "m1", body="v1")])
    edit1 = NewMessage("general", "alice", "e1", "v2", 1, kind=EntryKind.EDIT, target=1)
    react = NewMessage("general", "bob", "r1", "👍", 2, kind=EntryKind.REACT, target=1, emoji="👍")
    store.append([edit1, react])
    store.append([NewMessage("general", "alice", "e2", "v3", 3, kind=EntryKind.EDIT, target=1),
                  NewMessage("general", "bob", "u1", "", 4, kind=EntryKind.UNREACT, target=1, emoji="👍")])
    store.append([edit1, react])
    (view,) = store.message_view("general").messages
    assert view.message.body == "v3" and view.reactions == ()
