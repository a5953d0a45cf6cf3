"""The ``store`` fixture: every contract test runs once per backend (a real MongoDB too when
CHATMQ_TEST_MONGO_URL is set), so the bridge and the API can rely on identical behaviour.

``mongomock-sharded`` is the MongoDB store with every collection call checked against the shard
keys (tests/store/shardspy.py): a contract test that makes the store query the message log
without ``conv`` (a scatter-gather on a sharded cluster) fails at teardown, naming the query."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.core.store.base import Store
from chatmq.core.store.mongo import MongoStore
from chatmq.core.store.sqlite import SQLiteStore
from tests.conftest import mongo_test_url
from tests.store.shardspy import spy_on

BACKENDS = [
    "sqlite",
    "mongomock",
    "mongomock-sharded",
    *([pytest.param("mongo", marks=pytest.mark.mongo_real)] if mongo_test_url() else []),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite_store = SQLiteStore(str(tmp_path / "nested" / "chatmq.db"))
        yield sqlite_store
        sqlite_store.close()
    elif request.param == "mongomock":
        mock_store = MongoStore.mongomock(f"test_{uuid.uuid4().hex}")
        yield mock_store
        mock_store.close()
    elif request.param == "mongomock-sharded":
        spied_store = MongoStore.mongomock(f"test_{uuid.uuid4().hex}")
        log = spy_on(spied_store)
        yield spied_store
        spied_store.close()
        assert not log.violations, "queries a sharded cluster cannot target:\n" + "\n".join(log.violations)
    else:
        from pymongo import MongoClient

        client: MongoClient = MongoClient(mongo_test_url(), serverSelectionTimeoutMS=5000)
        name = f"chatmq_test_{uuid.uuid4().hex[:12]}"
        real_store = MongoStore(client[name])
        try:
            yield real_store
        finally:
            client.drop_database(name)
            real_store.close()

