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


# RabbitMQ's MQTT plugin routes a topic with each '/' turned into '.' and does not escape a '.' inside
# a level, so there ``chat/team.typing/msg`` and ``chat/team/typing/msg`` are one routing key: a
# conversation id with a dot would reach the members of another conversation (docs/brokers.md).
# Where the deployment says so (Settings.conversation_ids_with_dots), new conversations must not
# have one; this is the error code they are refused with.
DOTTED_ID = "dotted_id"


def dotted_conversation_id(conv_id: str) -> str | None:
    """Why ``conv_id`` cannot name a new conversation where ids must be dot-free, or None."""
    if "." not in conv_id:
        return None
    return (f"conversation id {conv_id!r} contains '.', which this deployment refuses: RabbitMQ's MQTT "
            f"plugin reads a '.' in a topic as a level separator, so its messages would reach other "
            f"conversations (CHATMQ_CONVERSATION_IDS_WITH_DOTS; docs/protocol.md, Identifiers)")
