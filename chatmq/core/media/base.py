"""The media store interface: uploaded files and their metadata, kept outside the broker.

Media never travels over MQTT: a device uploads it through the API, then sends a message whose
``attachments`` reference it. The store keeps, with the bytes, who uploaded it and in which
conversations a stored message attached it; those two facts decide who may download it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from chatmq.core.protocol import MEDIA_ID_PATTERN

_MEDIA_ID_RE = re.compile(MEDIA_ID_PATTERN)
MEDIA_URL_PREFIX = "/v1/media/"
CHUNK = 64 * 1024


class MediaNotFound(KeyError):
    """No media with this id (or an id that cannot be one)."""


class MediaCorrupt(ValueError):
    """Restored bytes do not match the size or sha256 their metadata says."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    id: str
    owner: str
    mime: str
    size: int
    sha256: str
    created_at: int  # ms since epoch
    name: str | None = None  # the uploader's file name, for Content-Disposition only
    convs: frozenset[str] = field(default_factory=frozenset)  # where a stored message attached it

    @property
    def url(self) -> str:
        return media_url(self.id)

    def to_payload(self) -> dict[str, object]:
        """What ``POST /v1/media`` answers; also a valid attachment object as it stands."""
        return {"media_id": self.id, "url": self.url, "mime": self.mime, "size": self.size, "sha256": self.sha256}


def new_media_id() -> str:
    """128 random bits: ids are never derived from anything a user sends, so never a path."""
    return secrets.token_hex(16)


def is_media_id(value: object) -> bool:
    return isinstance(value, str) and _MEDIA_ID_RE.fullmatch(value) is not None


def media_url(media_id: str) -> str:
    return f"{MEDIA_URL_PREFIX}{media_id}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def digest(stream: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of a seekable stream, read in chunks; leaves it rewound."""
    stream.seek(0)
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return size, hasher.hexdigest()


def may_read(info: MediaInfo, user: str, is_member: Callable[[str, str], bool]) -> bool:
    """The uploader, or a member of any conversation where a stored message attached it."""
    return user == info.owner or any(is_member(conv, user) for conv in sorted(info.convs))


def erase_media(media: MediaStore, conv: str, media_id: str, attached: Callable[[str, str], bool]) -> None:
    """A message of ``conv`` that attached the media was deleted, erased or purged: delete the
    upload, unless a message that is not deleted still attaches it (``attached(conv, media_id)``,
    the store's ``media_attached``) here or in another conversation it was linked to; then only
    this conversation loses it."""
    info = media.get(media_id)
    if info is None:
        return
    still = {c for c in info.convs if attached(c, media_id)}
    if not still:
        media.delete(media_id)
    elif conv not in still:
        media.unlink(media_id, conv)


class MediaStore(ABC):
    """Bytes plus metadata; implementations must be safe to share between threads."""

    @abstractmethod
    def put(self, owner: str, stream: BinaryIO, mime: str, *, name: str | None = None) -> MediaInfo:
        """Store a seekable stream under a fresh random id; size and sha256 are computed here."""

    @abstractmethod
    def get(self, media_id: str) -> MediaInfo | None:
        """Metadata, or None for an unknown (or impossible) id."""

    @abstractmethod
    def open(self, media_id: str) -> BinaryIO:
        """The bytes as a readable file object (the caller closes it); MediaNotFound if unknown."""

    @abstractmethod
    def link(self, media_id: str, conv: str) -> None:
        """Record that a stored message in ``conv`` attaches it (idempotent); MediaNotFound if unknown."""

    @abstractmethod
    def unlink(self, media_id: str, conv: str) -> None:
        """No stored message of ``conv`` attaches it any more: its members lose access (idempotent)."""

    @abstractmethod
    def delete(self, media_id: str) -> None:
        """Erase the bytes and metadata (idempotent: an unknown id is nothing to do)."""

    @abstractmethod
    def ids(self) -> Iterator[str]:
        """Every stored media id, ascending (a full export or a backup walks them)."""

    @abstractmethod
    def restore(self, info: MediaInfo, stream: BinaryIO) -> bool:
        """Store a seekable stream under ``info.id`` with its metadata as given (owner, time,
        name, links to ``info.convs``), checked against its size and sha256 (MediaCorrupt, nothing
        stored). Idempotent: when the id is stored already only missing links are added. Returns
        True if the bytes were stored."""

    def close(self) -> None:  # noqa: B027 - optional: only backends holding connections need it
        """Release connections."""
