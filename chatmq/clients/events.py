"""What the client hands to the application: acks, incoming events and connection errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from chatmq.core.protocol import TopicKind


class ConnectRefused(ConnectionError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


class AckTimeout(TimeoutError):
    """A send still without the server's ack ``waited`` seconds after it was queued (the client's
    ``ack_timeout``): the bridge or the store may be down, or the device offline (``connected``).

    A report, not a verdict: the send stays in the outbox and goes out again with the same
    ``client_msg_id`` (after every reconnect, and every ``resend_after`` seconds while connected)
    until the server answers; its Future stays pending and resolves then, and the server stores it
    once. ``ChatClient.on_ack_timeout`` hands one per send to the application (which may raise it).
    """

    def __init__(self, client_msg_id: str, conv: str, waited: float, connected: bool) -> None:
        where = "connected, the server has not answered" if connected else "not connected"
        super().__init__(f"send {client_msg_id!r} to {conv!r} not acked after {waited:.1f} s ({where}); "
                         "still resending")
        self.client_msg_id = client_msg_id
        self.conv = conv
        self.waited = waited
        self.connected = connected


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's answer to one send: ``received`` (durable, with its seq) or ``rejected``."""

    client_msg_id: str
    conv: str
    status: Literal["received", "rejected"]
    seq: int | None = None
    ts: int | None = None
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "received"

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Ack:
        return cls(
            str(payload["client_msg_id"]),
            str(payload.get("conv", "")),
            "received" if payload.get("status") == "received" else "rejected",
            payload.get("seq"),
            payload.get("ts"),
            payload.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One incoming event. ``kind`` is None for topics outside contract v1 (future event kinds
    arrive through the same hook, and the application tells them apart by ``topic``).

    MSG events are the conversation's log entries: messages and changes to them (``payload["kind"]``:
    edit, delete, react, unreact; clients.timeline folds them into messages as they stand). They
    reach the application in seq order, once each, whether live or caught up from history.
    """

    kind: TopicKind | None
    topic: str
    payload: dict[str, Any]

    @property
    def conv(self) -> str | None:
        return self.payload.get("conv") if self.kind is TopicKind.MSG else _level(self.topic, 1)

    @property
    def user(self) -> str | None:
        """The typing user, the user whose presence changed, or whose receipt marker moved."""
        if self.kind is TopicKind.TYPING:
            return _level(self.topic, 3)
        if self.kind is TopicKind.USER_PRESENCE:
            return _level(self.topic, 1)
        if self.kind is TopicKind.RECEIPTS:
            return self.payload.get("user")
        return None


def _level(topic: str, index: int) -> str | None:
    levels = topic.split("/")
    return levels[index] if len(levels) > index else None
