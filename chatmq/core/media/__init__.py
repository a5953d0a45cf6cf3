"""Uploaded media behind one interface; ``open_media_store(settings)`` picks the backend the
way ``open_store`` does: GridFS in the MongoDB database, else files under the data dir."""

from __future__ import annotations

import threading
from typing import Any

from chatmq.core.config import Settings
from chatmq.core.media.base import (
    MEDIA_URL_PREFIX,
    MediaInfo,
    MediaNotFound,
    MediaStore,
    is_media_id,
    may_read,
    media_url,
)

__all__ = [
    "MEDIA_URL_PREFIX",
    "MediaInfo",
    "MediaNotFound",
    "MediaStore",
    "is_media_id",
    "may_read",
    "media_url",
    "open_media_store",
]

_MOCK_CLIENTS: dict[str, Any] = {}
_MOCK_LOCK = threading.Lock()


def open_media_store(settings: Settings) -> MediaStore:
    url = settings.resolved_store_url
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from pymongo import MongoClient

        from chatmq.core.media.gridfs_store import GridFSMediaStore
        from chatmq.core.store.mongo import DEFAULT_DATABASE

        client: MongoClient[Any] = MongoClient(url)
        return GridFSMediaStore(client.get_default_database(default=DEFAULT_DATABASE), owns_client=True)
    if url.startswith("mongomock://"):
        return mongomock_media_store(url.removeprefix("mongomock://") or "chatmq")
    return _fs(settings)


def _fs(settings: Settings) -> MediaStore:
    from chatmq.core.media.fs import FsMediaStore

    return FsMediaStore(settings.data_dir / "media")


def mongomock_media_store(name: str) -> MediaStore:
    """GridFS over mongomock (tests). One fake client per name for the whole process, so an API
    and a bridge built in one test see the same media, as they would through a real server."""
    import mongomock
    from mongomock.gridfs import enable_gridfs_integration

    from chatmq.core.media.gridfs_store import GridFSMediaStore

    with _MOCK_LOCK:
        if not _MOCK_CLIENTS:
            enable_gridfs_integration()
        client = _MOCK_CLIENTS.setdefault(name, mongomock.MongoClient())
    return GridFSMediaStore(client.get_database(name))
