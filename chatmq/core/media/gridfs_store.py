"""Media in MongoDB GridFS (production mode), in the store's database, bucket ``media``.

The file's ``_id`` is the media id and the metadata document travels with the chunks, so one
insert makes an item visible complete or not at all (GridFS writes the files document last).
Conversation links are an ``$addToSet`` on ``metadata.convs``: atomic, idempotent, race-free.
The legacy ``gridfs.GridFS`` API is used because mongomock supports it (not GridFSBucket).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import gridfs
from pymongo.database import Database

from chatmq.core.ids import require_id
from chatmq.core.media.base import (
    MediaCorrupt,
    MediaInfo,
    MediaNotFound,
    MediaStore,
    digest,
    is_media_id,
    new_media_id,
    now_ms,
)

BUCKET = "media"


class GridFSMediaStore(MediaStore):
    def __init__(self, db: Database[Any], *, owns_client: bool = False) -> None:
        self._db = db
        self._fs = gridfs.GridFS(db, collection=BUCKET)
        self._files = db[f"{BUCKET}.files"]
        self._owns_client = owns_client

    def put(self, owner: str, stream: BinaryIO, mime: str, *, name: str | None = None) -> MediaInfo:
        size, sha256 = digest(stream)
        info = MediaInfo(new_media_id(), owner, mime, size, sha256, now_ms(), name)
        metadata = {"owner": owner, "mime": mime, "size": size, "sha256": sha256,
                    "created_at": info.created_at, "name": name, "convs": []}
        self._fs.put(stream, _id=info.id, filename=name, metadata=metadata)
        return info

    def get(self, media_id: str) -> MediaInfo | None:
        if not is_media_id(media_id):
            return None
        doc = self._files.find_one({"_id": media_id}, {"metadata": 1})
        if doc is None:
            return None
        meta = doc["metadata"]
        return MediaInfo(
            id=media_id, owner=meta["owner"], mime=meta["mime"], size=meta["size"], sha256=meta["sha256"],
            created_at=meta["created_at"], name=meta.get("name"), convs=frozenset(meta.get("convs", ())),
        )

    def open(self, media_id: str) -> BinaryIO:
        if not is_media_id(media_id):
            raise MediaNotFound(media_id)
        try:
            return cast(BinaryIO, self._fs.get(media_id))
        except gridfs.errors.NoFile:
            raise MediaNotFound(media_id) from None

    def link(self, media_id: str, conv: str) -> None:
        require_id(conv, "conversation id")
        if not is_media_id(media_id):
            raise MediaNotFound(media_id)
        result = self._files.update_one({"_id": media_id}, {"$addToSet": {"metadata.convs": conv}})
        if result.matched_count == 0:
            raise MediaNotFound(media_id)

    def unlink(self, media_id: str, conv: str) -> None:
        require_id(conv, "conversation id")
        if is_media_id(media_id):
            self._files.update_one({"_id": media_id}, {"$pull": {"metadata.convs": conv}})

    def delete(self, media_id: str) -> None:
        """GridFS removes the files document first (the item is gone for readers), then its chunks."""
        if is_media_id(media_id):
            self._fs.delete(media_id)

    def ids(self) -> Iterator[str]:
        for doc in self._files.find({}, {"_id": 1}).sort("_id", 1):
            yield str(doc["_id"])

    def restore(self, info: MediaInfo, stream: BinaryIO) -> bool:
        if self.get(info.id) is not None:
            if info.convs:
                links = {"$addToSet": {"metadata.convs": {"$each": sorted(info.convs)}}}
                self._files.update_one({"_id": info.id}, links)
            return False
        if digest(stream) != (info.size, info.sha256):
            raise MediaCorrupt(f"media {info.id}: the bytes do not match size {info.size} and sha256 {info.sha256}")
        metadata = {"owner": info.owner, "mime": info.mime, "size": info.size, "sha256": info.sha256,
                    "created_at": info.created_at, "name": info.name, "convs": sorted(info.convs)}
        try:
            self._fs.put(stream, _id=info.id, filename=info.name, metadata=metadata)
        except gridfs.errors.FileExists:
            return False
        return True

    def close(self) -> None:
        if self._owns_client:
            self._db.client.close()
