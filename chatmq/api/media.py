"""``/v1/media``: upload a file, download it by its url.

Media does not travel through the broker: a device uploads here, then attaches the answer to a
message. The type is decided from the content (magic bytes), never from the name or the declared
Content-Type, and a claim that disagrees with the content is refused: what is served is always
what was sniffed, with ``nosniff``, so an upload cannot turn into HTML or script in a browser.
Only the uploader and members of a conversation where a stored message attached it may download.
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading

from flask import Flask, Response, current_app, jsonify, request, send_file
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field
from werkzeug.datastructures import FileStorage as WerkzeugFile

from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.errors import ApiError, error_responses
from chatmq.api.presence import share_conversation
from chatmq.core.config import Settings
from chatmq.core.media import MediaStore, is_media_id, may_read, open_media_store
from chatmq.core.media.sniff import HEAD_BYTES, agrees, sniff, type_of_name
from chatmq.core.protocol import MAX_ATTACHMENT_NAME_CHARS

EXTENSION = "chatmq.media"
MULTIPART_SLACK = 64 * 1024  # room for the multipart framing around a file of the maximum size
INLINE_KINDS = ("image/", "video/", "audio/")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")

bp = APIBlueprint(
    "media",
    __name__,
    url_prefix="/v1/media",
    abp_tags=[Tag(name="media")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)


class MediaHolder:
    """The media store, opened lazily once per process (a MongoDB client must not cross a fork)."""

    def __init__(self, settings: Settings, given: MediaStore | None) -> None:
        self._settings = settings
        self._given = given
        self._store = given
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def store(self) -> MediaStore:
        if self._given is not None:
            return self._given
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                self._store = open_media_store(self._settings)
                self._pid = os.getpid()
            return self._store


def install(app: Flask, settings: Settings, media: MediaStore | None = None) -> None:
    app.extensions[EXTENSION] = MediaHolder(settings, media)
    app.register_api(bp)


def media_store() -> MediaStore:
    holder: MediaHolder = current_app.extensions[EXTENSION]
    return holder.store


@bp.before_request
def _raise_body_limit() -> None:
    """Uploads may be far bigger than the API's usual request cap (checked exactly below)."""
    request.max_content_length = get_context().settings.media_max_bytes + MULTIPART_SLACK


bp.before_request(require_user)


class UploadForm(BaseModel):
    file: FileStorage = Field(description="the file; its type is sniffed from the content")


class MediaOut(BaseModel):
    media_id: str
    url: str = Field(description="GET it with the same bearer token; relative to the API base")
    mime: str = Field(description="the type sniffed from the content")
    size: int
    sha256: str


class MediaPath(BaseModel):
    media_id: str


@bp.post("", responses={201: MediaOut, **error_responses(413, 415)})
def upload(form: UploadForm) -> tuple[Response, int]:
    """Upload one file (multipart/form-data, part ``file``). The answer is a valid attachment."""
    settings = get_context().settings
    upload = form.file
    if not isinstance(upload, WerkzeugFile):  # a plain form field named "file", not a file part
        raise ApiError(400, "file: expected a file part (Content-Disposition with a filename)")
    name = _clean_name(upload.filename)  # before reading anything
    stream = upload.stream
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    if size == 0:
        raise ApiError(400, "the file is empty")
    if size > settings.media_max_bytes:
        raise ApiError(413, f"the file is larger than {settings.media_max_bytes} bytes", "too_large")
    mime = sniff(stream.read(HEAD_BYTES))
    stream.seek(0)
    allowed = settings.media_allowed_types
    if mime is None or mime not in allowed:
        raise ApiError(
            415, f"content type {mime or 'unknown'} is not accepted (allowed: {', '.join(sorted(allowed))})"
        )
    for claim, what in ((upload.mimetype, "declared Content-Type"), (type_of_name(name), "file name")):
        if not agrees(mime, claim):
            raise ApiError(415, f"the {what} says {claim} but the content is {mime}")
    info = media_store().put(current_user(), stream, mime, name=name)
    return jsonify(info.to_payload()), 201


def _avatar_visible(media_id: str, owner: str, viewer: str) -> bool:
    """A media that is its owner's current avatar (chatmq/api/users.py) may be read by whoever may see
    the owner's profile: the owner and those sharing a conversation with them."""
    user = get_context().store.get_user(owner)
    return user is not None and user.avatar == media_id and (viewer == owner or share_conversation(viewer, owner))


def _clean_name(name: str | None) -> str | None:
    """The last path component without control characters: a display name, never a path."""
    if not name:
        return None
    base = _UNSAFE_NAME.sub("", re.split(r"[\\/]", name)[-1]).strip()
    if len(base) > MAX_ATTACHMENT_NAME_CHARS:  # a message could not carry it (docs/protocol.md)
        raise ApiError(400, f"file name: at most {MAX_ATTACHMENT_NAME_CHARS} characters, got {len(base)}")
    return base or None


@bp.get("/<media_id>", responses={200: None, **error_responses(403, 404)})
def download(path: MediaPath) -> Response:
    """The bytes, for the uploader and members of a conversation where a message attached it."""
    media = media_store()
    info = media.get(path.media_id) if is_media_id(path.media_id) else None
    if info is None:
        raise ApiError(404, f"no media {path.media_id!r}")
    store = get_context().store

    def is_member(conv: str, user: str) -> bool:
        conversation = store.get_conversation(conv)
        return conversation is not None and user in conversation.members

    if not may_read(info, current_user(), is_member) and not _avatar_visible(info.id, info.owner, current_user()):
        raise ApiError(403, "not shared with you")
    inline = info.mime.startswith(INLINE_KINDS)
    name = info.name or f"{info.id}{mimetypes.guess_extension(info.mime) or ''}"
    response = send_file(
        media.open(info.id),
        mimetype=info.mime,
        as_attachment=not inline,
        download_name=name,
        conditional=False,
        etag=False,
        last_modified=info.created_at / 1000,
    )
    response.content_length = info.size
    response.set_etag(info.sha256)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.no_cache = None
    response.cache_control.private = True
    return response.make_conditional(request, accept_ranges=True, complete_length=info.size)
