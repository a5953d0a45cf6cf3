"""The ``store`` fixture: every contract test runs once per backend (a real MongoDB too when
CHATMQ_TEST_MONGO_URL is set), so the bridge and the API can rely on identical behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatcore.store.base import Store
from chatcore.store.mongo import MongoStore
from chatcore.store.sqlite import SQLiteStore
from tests.conftest import mongo_test_url

BACKENDS = [
    "sqlite",
    "mongomock",
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

