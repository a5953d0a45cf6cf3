"""Media on the local filesystem (embedded mode), under ``<data_dir>/media``.

Each item is a directory ``<root>/<id[:2]>/<id>/`` holding ``data`` and ``meta.json``. It is
written in a private temporary directory and renamed into place, so a reader sees either nothing
or the complete item. Links to conversations are empty files ``conv.<conv>``: creating one is
atomic and idempotent, so the bridge and any number of API workers never race on a shared file.
Paths are built only from validated random ids and validated conversation ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from chatmq.core.ids import require_id
from chatmq.core.media.base import (
    CHUNK,
    MediaCorrupt,
    MediaInfo,
    MediaNotFound,
    MediaStore,
    digest,
    is_media_id,
    new_media_id,
    now_ms,
)

_LINK = "conv."


class FsMediaStore(MediaStore):
    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    def _dir(self, media_id: str) -> Path:
        if not is_media_id(media_id):
            raise MediaNotFound(media_id)
        return self._root / media_id[:2] / media_id

    def put(self, owner: str, stream: BinaryIO, mime: str, *, name: str | None = None) -> MediaInfo:
        size, sha256 = digest(stream)
        info = MediaInfo(new_media_id(), owner, mime, size, sha256, now_ms(), name)
        self._write(info, stream)
        return info

    def _write(self, info: MediaInfo, stream: BinaryIO) -> None:
        """Bytes, metadata and links in a private directory, renamed into place whole."""
        final = self._dir(info.id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self._root))
        try:
            with open(tmp / "data", "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            meta = {k: getattr(info, k) for k in ("id", "owner", "mime", "size", "sha256", "created_at", "name")}
            (tmp / "meta.json").write_text(json.dumps(meta))
            for conv in info.convs:
                (tmp / f"{_LINK}{require_id(conv, 'conversation id')}").touch()
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def ids(self) -> Iterator[str]:
        for prefix in sorted(p for p in self._root.iterdir() if len(p.name) == 2 and p.is_dir()):
            yield from sorted(p.name for p in prefix.iterdir() if is_media_id(p.name) and (p / "meta.json").exists())

    def restore(self, info: MediaInfo, stream: BinaryIO) -> bool:
        if self.get(info.id) is not None:
            for conv in info.convs:
                self.link(info.id, conv)
            return False
        if digest(stream) != (info.size, info.sha256):
            raise MediaCorrupt(f"media {info.id}: the bytes do not match size {info.size} and sha256 {info.sha256}")
        try:
            self._write(info, stream)
        except OSError:  # another restore of the same id won the rename: its item stands
            if self.get(info.id) is None:
                raise
            return False
        return True

    def get(self, media_id: str) -> MediaInfo | None:
        try:
            where = self._dir(media_id)
            meta = json.loads((where / "meta.json").read_text())
        except (MediaNotFound, FileNotFoundError):
            return None
        convs = frozenset(p.name.removeprefix(_LINK) for p in where.iterdir() if p.name.startswith(_LINK))
        return MediaInfo(**meta, convs=convs)

    def open(self, media_id: str) -> BinaryIO:
        try:
            return open(self._dir(media_id) / "data", "rb")
        except FileNotFoundError:
            raise MediaNotFound(media_id) from None

    def link(self, media_id: str, conv: str) -> None:
        where = self._dir(media_id)
        if not (where / "meta.json").exists():
            raise MediaNotFound(media_id)
        (where / f"{_LINK}{require_id(conv, 'conversation id')}").touch()

    def unlink(self, media_id: str, conv: str) -> None:
        link = f"{_LINK}{require_id(conv, 'conversation id')}"
        if is_media_id(media_id):
            (self._dir(media_id) / link).unlink(missing_ok=True)

    def delete(self, media_id: str) -> None:
        """Rename out of sight first (atomic: a reader sees the item whole or not at all), then remove."""
        if not is_media_id(media_id):
            return
        where = self._dir(media_id)
        doomed = self._root / f".del-{media_id}"
        try:
            os.rename(where, doomed)
        except FileNotFoundError:
            if not doomed.exists():
                return
        shutil.rmtree(doomed)
