"""MongoDB-only behaviour: opening by URL, the durable write concern and losing a client-id race."""

from __future__ import annotations

import pytest
from pymongo.errors import PyMongoError

from chatcore.netutil import free_port
from chatcore.store import open_store
from chatcore.store.mongo import DURABLE, MongoStore
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
    assert [(m.seq, m.client_msg_id) for m in history] == [(1, "c1"), (2, "c0"), (4, "c2")]  # 3: the gap
    store.close()


def test_a_crash_between_a_change_and_its_state_is_repaired_by_the_resend() -> None:
    """Without a transaction the entry is stored before its message's state is updated. If the
    bridge dies in between, nothing was acked, the broker redelivers the send, and the duplicate
    applies the change again: the view ends up as if nothing had happened."""
    from chatcore.protocol import EntryKind
    from chatcore.store.base import NewMessage

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
    from chatcore.protocol import EntryKind
    from chatcore.store.base import NewMessage

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
