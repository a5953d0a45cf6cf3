"""Webhooks, sans-IO: the events operators may subscribe to, their JSON bodies and the signature.

Signature scheme (docs/protocol.md, "Webhooks"): each attempt carries ``X-Chatmq-Timestamp`` (Unix
seconds of the attempt) and ``X-Chatmq-Signature: v1=<hex>``, where ``<hex>`` is
HMAC-SHA256(secret, ``"{timestamp}.{body}"``) over the exact body bytes. A receiver recomputes it,
compares in constant time and refuses timestamps more than ``TOLERANCE_S`` away from its clock, so
a captured delivery cannot be replayed later. ``X-Chatmq-Delivery`` is the idempotency key: the
same on every retry and replay of one delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from chatmq.core.protocol import EntryKind
from chatmq.core.store.base import (
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    EVENT_TITLE_CHANGED,
    ConversationEvent,
    Message,
)

MESSAGE_CREATED = "message.created"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
MEMBER_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
EVENT_TYPES = (MESSAGE_CREATED, MESSAGE_EDITED, MESSAGE_DELETED, CONVERSATION_CREATED, CONVERSATION_UPDATED,
               MEMBER_ADDED, MEMBER_REMOVED)
# The log's entry kinds that are webhook events (reactions are not: ask if you need them).
_ENTRY_EVENTS = {EntryKind.MESSAGE: MESSAGE_CREATED, EntryKind.EDIT: MESSAGE_EDITED, EntryKind.DELETE: MESSAGE_DELETED}

SIGNATURE_HEADER = "X-Chatmq-Signature"
TIMESTAMP_HEADER = "X-Chatmq-Timestamp"
DELIVERY_HEADER = "X-Chatmq-Delivery"
EVENT_HEADER = "X-Chatmq-Event"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300
USER_AGENT = "chatmq-webhooks/1"

_CONVERSATION_EVENTS = {
    EVENT_CREATED: CONVERSATION_CREATED,
    EVENT_MEMBER_ADDED: MEMBER_ADDED,
    EVENT_MEMBER_REMOVED: MEMBER_REMOVED,
    EVENT_TITLE_CHANGED: CONVERSATION_UPDATED,
}


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def message_event(message: Message) -> dict[str, Any] | None:
    """``message.created``, ``message.edited`` (the edit entry: new ``body``, ``target``) or
    ``message.deleted`` (``target`` erased): the entry exactly as ``chat/{conv}/msg`` carries it.
    None for entries that are no webhook event (reactions)."""
    event_type = _ENTRY_EVENTS.get(EntryKind(message.kind))
    if event_type is None:
        return None
    return {"id": f"m:{message.conv}:{message.seq}", "type": event_type, "ts": message.ts,
            "conv": message.conv, "data": message.to_payload()}  # fmt: skip


def conversation_event(event: ConversationEvent, members: tuple[str, ...] | None) -> dict[str, Any]:
    """``conversation.created``, ``member.added``, ``member.removed``, ``conversation.updated``."""
    data: dict[str, Any] = {"conv": event.conv, "title": event.title}
    if event.subject is not None:
        data["user"] = event.subject
    if event.kind == EVENT_TITLE_CHANGED:
        data["change"] = "title_changed"
    if members is not None:
        data["members"] = list(members)
    return {"id": f"e:{event.id}", "type": _CONVERSATION_EVENTS[event.kind], "ts": event.ts, "conv": event.conv,
            "data": data}  # fmt: skip


def event_type_of(event: ConversationEvent) -> str:
    return _CONVERSATION_EVENTS[event.kind]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, timestamp: int, body: bytes, event_type: str, delivery_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, now_s: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: the timestamp is recent and one ``v1=`` signature matches the body."""
    raw_ts = headers.get(TIMESTAMP_HEADER, "")
    if not raw_ts.isdigit() or abs(now_s - int(raw_ts)) > tolerance_s:
        return False
    expected = signature(secret, int(raw_ts), body)
    offered = [part.strip() for part in headers.get(SIGNATURE_HEADER, "").split(",")]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def erased(body: dict[str, Any], conv: str, target: int) -> dict[str, Any] | None:
    """A logged webhook body without the text of message ``target`` (deleted since): the message's
    own event and its edits' lose body and attachments, as the store's entries do. None: not about it."""
    data = body.get("data") or {}
    if body.get("conv") != conv:
        return None
    about = data.get("seq") == target or (data.get("kind") == EntryKind.EDIT and data.get("target") == target)
    if not about or data.get("erased"):
        return None
    return {**body, "data": {**data, "body": "", "attachments": [], "erased": True}}
