"""Identifier rules shared by users, conversations and devices.

Ids appear inside MQTT topic levels, so they must never contain ``/``, ``+``, ``#`` or ``$``;
the allowed alphabet keeps them safe in topics, URLs and log lines alike. ``.`` and ``..`` are
refused: as URL path segments they mean "this" and "parent", so HTTP clients rewrite them away and
such a conversation could never be reached. The pattern spells that out without look-arounds, which
pydantic's (Rust) regex engine does not have: 3 to 64 characters of the alphabet, or 1 to 2 that
are not all dots.
"""

from __future__ import annotations

import re

ID_PATTERN = r"(?:[A-Za-z0-9_.-]{3,64}|[A-Za-z0-9_-][A-Za-z0-9_.-]?|\.[A-Za-z0-9_-])"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def require_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise ValueError naming the kind."""
    if not is_valid_id(value):
        raise ValueError(f"invalid {kind} {value!r}: must match {ID_PATTERN}")
    return value  # type: ignore[return-value]
