"""Sends that are not acked yet, retried with the same client_msg_id until acked or rejected.

The server makes a resend idempotent (same conv, sender and client_msg_id: acked with the original
seq, never stored twice), so the rule here is simple: when in doubt, send again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from chatmq.clients.events import Ack
from chatmq.clients.state import LocalState, QueuedSend
from chatmq.core.protocol import ErrorCode

TRANSIENT_REFUSAL = ErrorCode.RATE_LIMITED.value  # the only rejection that means "later", not "never"


class Transmission(Protocol):
    """What the transport reports about one publish (paho's MQTTMessageInfo fits): False while the
    MQTT client still holds it in its own queue and will resend it after a reconnect by itself."""

    def is_published(self) -> bool: ...


@dataclass(slots=True)
class Pending:
    item: QueuedSend
    future: Future[Ack]
    sent_at: float = 0.0  # monotonic time of the last publish; 0 = never published
    transmission: Transmission | None = None
    queued_at: float = field(default_factory=time.monotonic)  # added, or restored from a previous process
    overdue: bool = False  # reported once as unacked past ack_timeout


@dataclass(frozen=True, slots=True)
class Overdue:
    item: QueuedSend
    waited: float  # seconds since it was queued (or restored)


@dataclass
class Outbox:
    """In-memory view of the persisted queue; ``publish`` puts one payload on the wire."""

    state: LocalState
    owner: str
    publish: Callable[[QueuedSend], Transmission | None]
    resend_after: float = 10.0
    ack_timeout: float | None = None  # overdue() reports a send unacked this long; None: never
    _pending: dict[str, Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def restore(self) -> list[Future[Ack]]:
        """Load what a previous process left unacked; it goes out on the next flush."""
        futures = []
        with self._lock:
            for item in self.state.queued_sends(self.owner):
                if item.client_msg_id not in self._pending:
                    self._pending[item.client_msg_id] = Pending(item, Future())
                futures.append(self._pending[item.client_msg_id].future)
        return futures

    def add(self, item: QueuedSend) -> Future[Ack]:
        """Persist first, then publish: a crash in between loses nothing."""
        with self._lock:
            existing = self._pending.get(item.client_msg_id)
            if existing is not None:
                return existing.future
            self.state.queue_send(self.owner, item)
            pending = self._pending[item.client_msg_id] = Pending(item, Future())
        self._send(pending)
        return pending.future

    def settle(self, ack: Ack) -> bool:
        """Resolve a send with its ack. False if the ack is not ours (another device of the same user)."""
        with self._lock:
            pending = self._pending.get(ack.client_msg_id)
            if pending is None:
                return False
            if ack.status == "rejected" and (ack.error or {}).get("code") == TRANSIENT_REFUSAL:
                return True  # not a verdict on the message: it stays queued and is resent later
            del self._pending[ack.client_msg_id]
            self.state.remove_send(self.owner, ack.client_msg_id)
        if not pending.future.done():
            pending.future.set_result(ack)
        return True

    def flush(self, *, reconnected: bool = False) -> int:
        """Send again what needs it. After a reconnect: everything the transport is not already
        resending itself; otherwise only sends unacked for ``resend_after`` seconds. Returns the count."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending.values() if self._due(p, now, reconnected)]
        for pending in due:
            self._send(pending)
        return len(due)

    def overdue(self) -> list[Overdue]:
        """Sends unacked for ``ack_timeout`` seconds, each reported once (it stays queued and resent)."""
        if self.ack_timeout is None:
            return []
        now = time.monotonic()
        found = []
        with self._lock:
            for pending in self._pending.values():
                if not pending.overdue and now - pending.queued_at >= self.ack_timeout:
                    pending.overdue = True
                    found.append(Overdue(pending.item, now - pending.queued_at))
        return found

    def _due(self, pending: Pending, now: float, reconnected: bool) -> bool:
        in_transport = pending.transmission is not None and not _published(pending.transmission)
        if in_transport:
            return False  # paho keeps unconfirmed QoS 1 publishes and resends them on reconnect itself
        return reconnected or pending.sent_at == 0.0 or now - pending.sent_at >= self.resend_after

    def _send(self, pending: Pending) -> None:
        pending.sent_at = time.monotonic()
        pending.transmission = self.publish(pending.item)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def fail_all(self, exc: BaseException) -> None:
        """Give up on the futures (the client is closing); the persisted entries stay for next time."""
        with self._lock:
            pendings = list(self._pending.values())
        for pending in pendings:
            if not pending.future.done():
                pending.future.set_exception(exc)


def _published(transmission: Transmission) -> bool:
    """paho raises (rather than returning False) for a publish made while disconnected: that one
    never entered its queue, so it counts as done with, and the resend timer decides."""
    try:
        return transmission.is_published()
    except RuntimeError:
        return True
