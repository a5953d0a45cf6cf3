"""One contract suite over every media backend: files in a tmp dir, GridFS over mongomock, and
GridFS on a real MongoDB when CHATMQ_TEST_MONGO_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.core.media import MediaStore
from chatmq.core.media.fs import FsMediaStore

MONGO_URL = os.environ.get("CHATMQ_TEST_MONGO_URL")
BACKENDS = ["fs", "gridfs-mongomock", pytest.param("gridfs-mongodb", marks=pytest.mark.skipif(
    not MONGO_URL, reason="set CHATMQ_TEST_MONGO_URL to run against a real MongoDB"))]


@pytest.fixture(params=BACKENDS)
def media(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MediaStore]:
    if request.param == "fs":
        yield FsMediaStore(tmp_path / "media")
    elif request.param == "gridfs-mongomock":
        from chatmq.core.media import mongomock_media_store

        yield mongomock_media_store(f"media-{uuid.uuid4().hex}")
    else:
        from pymongo import MongoClient

        from chatmq.core.media.gridfs_store import GridFSMediaStore

        client: MongoClient = MongoClient(MONGO_URL, serverSelectionTimeoutMS=5000)
        name = f"chatmq_media_test_{uuid.uuid4().hex[:12]}"
        store = GridFSMediaStore(client.get_database(name))
        yield store
        client.drop_database(name)
        client.close()
