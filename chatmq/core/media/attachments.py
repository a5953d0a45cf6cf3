"""The bridge's attachment rule: a message may only attach media its sender uploaded.

Checked before the append (a refused send stores nothing) against the stored metadata, so what
receivers read in an attachment (mime, size, sha256) is what the download will serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chatmq.core.media.base import MediaStore
from chatmq.core.protocol import ErrorCode


def attachment_refusal(
    media: MediaStore, sender: str, attachments: Iterable[Mapping[str, Any]]
) -> tuple[ErrorCode, str] | None:
    """Why the attachments are refused, or None. Store errors propagate (the caller retries)."""
    for index, attachment in enumerate(attachments):
        media_id = attachment.get("media_id")
        info = media.get(media_id) if isinstance(media_id, str) else None
        if info is None or info.owner != sender:
            # One answer for "unknown" and "someone else's": no probing for other users' ids.
            return ErrorCode.BAD_ATTACHMENT, f"attachments[{index}]: no media {media_id!r} uploaded by {sender!r}"
        for key in ("mime", "size", "sha256"):
            if key in attachment and attachment[key] != getattr(info, key):
                return ErrorCode.BAD_ATTACHMENT, (
                    f"attachments[{index}].{key} is {attachment[key]!r} but the media's is {getattr(info, key)!r}"
                )
    return None


def attached_media(attachments: Iterable[Mapping[str, Any]]) -> list[str]:
    return [a["media_id"] for a in attachments if isinstance(a.get("media_id"), str)]
