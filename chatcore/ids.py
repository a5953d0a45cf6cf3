"""Identifier rules shared by users, conversations and devices.

Ids appear inside MQTT topic levels, so they must never contain ``/``, ``+``, ``#`` or ``$``;
the allowed alphabet keeps them safe in topics, URLs and log lines alike.
"""

from __future__ import annotations

import re

ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def require_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise ValueError naming the kind."""
    if not is_valid_id(value):
        raise ValueError(f"invalid {kind} {value!r}: must match {ID_PATTERN}")
    return value  # type: ignore[return-value]
