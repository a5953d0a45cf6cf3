"""What a user's profile may hold: the display name and avatar chat clients show.

One set of rules for every way a profile is written (the user over HTTP, an admin, bulk
provisioning, a user created on first login from the identity provider's name claim).
"""

from __future__ import annotations

import unicodedata

from chatmq.core.media.base import is_media_id

MAX_DISPLAY_NAME_CHARS = 100


def clean_display_name(value: str | None) -> str | None:
    """Trimmed, or None for none; ValueError for control characters or over the length limit."""
    if value is None:
        return None
    name = value.strip()
    if not name:
        return None
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        raise ValueError(f"display_name is longer than {MAX_DISPLAY_NAME_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise ValueError("display_name must not contain control or format characters")
    return name


def check_avatar(value: str | None) -> str | None:
    """A media id (chatmq.core.media) or None; ValueError otherwise."""
    if value is None or value == "":
        return None
    if not is_media_id(value):
        raise ValueError(f"avatar {value!r} is not a media id")
    return value
