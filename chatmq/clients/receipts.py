"""Receipts, both ways, as pure bookkeeping (no I/O): the markers this device still has to send,
coalesced (receipts are cumulative, so only the highest seq per conversation and status goes
out), and every member's markers as the server announced them (they only move forward).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

STATUSES = ("delivered", "read")


@dataclass(frozen=True, slots=True)
class Marker:
    """How far one member has got in one conversation (everything up to the seq)."""

    user: str
    delivered_seq: int = 0
    read_seq: int = 0


class Receipts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[tuple[str, str], int] = {}
        self._sent: dict[tuple[str, str], int] = {}
        self._markers: dict[str, dict[str, Marker]] = {}

    # --- ours ---------------------------------------------------------------------------------
    def want(self, conv: str, status: str, seq: int) -> bool:
        """Ask for a receipt up to ``seq``; False when one as high is already sent or due."""
        key = (conv, status)
        with self._lock:
            if seq <= max(self._sent.get(key, 0), self._due.get(key, 0)):
                return False
            self._due[key] = seq
            return True

    def take_due(self) -> list[tuple[str, str, int]]:
        """What to send now: (conv, status, seq). A read also covers delivered, so a delivered
        receipt at or below a read one due at the same time is not sent."""
        with self._lock:
            due, self._due = self._due, {}
        out = []
        for (conv, status), seq in due.items():
            if status == "delivered" and due.get((conv, "read"), 0) >= seq:
                self.sent(conv, status, seq)
                continue
            out.append((conv, status, seq))
        return out

    def sent(self, conv: str, status: str, seq: int) -> None:
        with self._lock:
            key = (conv, status)
            self._sent[key] = max(self._sent.get(key, 0), seq)
            if status == "read":
                self._sent[(conv, "delivered")] = max(self._sent.get((conv, "delivered"), 0), seq)

    def retry(self, conv: str, status: str, seq: int) -> None:
        """A receipt that could not be published (offline): due again."""
        with self._lock:
            key = (conv, status)
            if seq > self._sent.get(key, 0):
                self._due[key] = max(self._due.get(key, 0), seq)

    def forget(self, conv: str) -> None:
        with self._lock:
            for status in STATUSES:
                self._due.pop((conv, status), None)
            self._markers.pop(conv, None)

    # --- everyone's -----------------------------------------------------------------------------
    def seed(self, conv: str, rows: list[dict[str, Any]]) -> None:
        """Markers from ``GET /v1/conversations/{conv}/receipts``."""
        for row in rows:
            user = str(row.get("user"))
            for status in STATUSES:
                self._raise(conv, user, status, int(row.get(f"{status}_seq") or 0))

    def announced(self, conv: str, payload: dict[str, Any]) -> bool:
        """A ``chat/{conv}/receipts`` payload; True if it moved a marker."""
        user, seq, status = payload.get("user"), payload.get("seq"), payload.get("status")
        if not isinstance(user, str) or not isinstance(seq, int) or status not in STATUSES:
            return False
        return self._raise(conv, user, str(status), seq)

    def of(self, conv: str) -> dict[str, Marker]:
        with self._lock:
            return dict(self._markers.get(conv, {}))

    def _raise(self, conv: str, user: str, status: str, seq: int) -> bool:
        with self._lock:
            markers = self._markers.setdefault(conv, {})
            old = markers.get(user, Marker(user))
            delivered = max(old.delivered_seq, seq)  # reading implies delivery
            read = max(old.read_seq, seq) if status == "read" else old.read_seq
            if (delivered, read) == (old.delivered_seq, old.read_seq):
                return False
            markers[user] = Marker(user, delivered, read)
            return True
