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
