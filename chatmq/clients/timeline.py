"""A conversation's messages as they stand, kept from the log: pure bookkeeping, no I/O.

Start from a ``view=messages`` history page (``load``), then ``apply`` every entry after its
``last_seq`` in seq order, live or caught up. The rules (docs/protocol.md, "Changing messages") give
the same result whatever suffix of the log is replayed over a state that already has part of it,
so applying an entry the page already reflects is harmless.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]  # the view=messages shape


@dataclass(frozen=True, slots=True)
class Applied:
    """What one entry did: the message it made or changed (``seq``), and how (the entry's kind)."""

    seq: int
    kind: str


@dataclass
class Timeline:
    messages: dict[int, Message] = field(default_factory=dict)
    last_seq: int = 0  # the highest seq applied (or the page's last_seq)

    def load(self, page: list[Message], last_seq: int) -> None:
        for message in page:
            self.messages[int(message["seq"])] = copy.deepcopy(message)
        self.last_seq = max(self.last_seq, last_seq)

    def apply(self, entry: dict[str, Any]) -> Applied | None:
        """Fold one raw entry in (a ``chat/{conv}/msg`` payload or an ``entries`` history item)."""
        seq = entry.get("seq")
        if not isinstance(seq, int) or entry.get("notice"):
            return None
        self.last_seq = max(self.last_seq, seq)
        kind = entry.get("kind", "message")
        if kind == "message":
            if seq not in self.messages:
                self.messages[seq] = _as_view(entry)
            return Applied(seq, kind)
        target = entry.get("target")
        message = self.messages.get(target) if isinstance(target, int) else None
        if message is None:
            return None  # a change to a message outside what this timeline holds
        if kind == "edit" and message["deleted"] is None and _newer(entry, message["edited"]):
            message["body"] = entry.get("body", "")
            message["edited"] = {"seq": seq, "ts": entry.get("ts")}
        elif kind == "delete":
            message.update(body="", attachments=[], edited=None, reactions=[],
                           deleted={"seq": seq, "by": entry.get("sender"), "ts": entry.get("ts")})
        elif kind in ("react", "unreact") and message["deleted"] is None:
            _react(message, str(entry.get("emoji")), str(entry.get("sender")), add=kind == "react")
        return Applied(int(target), kind)  # type: ignore[arg-type]

    def get(self, seq: int) -> Message | None:
        return self.messages.get(seq)


def _as_view(entry: dict[str, Any]) -> Message:
    keep = ("conv", "seq", "id", "sender", "client_msg_id", "body", "attachments", "ts")
    message = {k: copy.deepcopy(entry.get(k)) for k in keep}
    message["attachments"] = message["attachments"] or []
    erased = bool(entry.get("erased"))
    return {**message, "reply_to": entry.get("reply_to"), "edited": None,
            "deleted": {"seq": None, "by": None, "ts": None} if erased else None, "reactions": []}


def _newer(entry: dict[str, Any], edited: dict[str, Any] | None) -> bool:
    return edited is None or int(entry["seq"]) > int(edited.get("seq") or 0)


def _react(message: Message, emoji: str, user: str, *, add: bool) -> None:
    reactions: list[dict[str, Any]] = message["reactions"]
    group = next((r for r in reactions if r["emoji"] == emoji), None)
    if add:
        if group is None:
            group = {"emoji": emoji, "count": 0, "users": []}
            reactions.append(group)
        if user not in group["users"]:
            group["users"].append(user)
    elif group is not None and user in group["users"]:
        group["users"].remove(user)
    if group is not None:
        group["count"] = len(group["users"])
        if not group["users"]:
            reactions.remove(group)
