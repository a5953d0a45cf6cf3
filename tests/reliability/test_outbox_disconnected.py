"""A send made while paho is disconnected must not kill the client's ticker thread (found by the
fault harness: paho's is_published() raises for such a publish, and the resend loop died with it)."""

from __future__ import annotations

from pathlib import Path

from chatmq.clients.outbox import Outbox
from chatmq.clients.state import LocalState, QueuedSend


class _FailedPublish:
    def is_published(self) -> bool:
        raise RuntimeError("Message publish failed: The client is not currently connected.")


def test_a_publish_made_while_disconnected_is_resent_not_fatal(tmp_path: Path) -> None:
    sent: list[str] = []

    def publish(item: QueuedSend) -> _FailedPublish:
        sent.append(item.client_msg_id)
        return _FailedPublish()

    outbox = Outbox(LocalState(tmp_path / "state.db"), "u.d", publish, resend_after=0.0)
    outbox.add(QueuedSend("m1", "c1", {"client_msg_id": "m1", "body": "x"}, 0.0))
    assert outbox.flush() == 1  # no RuntimeError from a publish that cannot go out: the send stays queued
    assert outbox.flush(reconnected=True) == 1
    assert sent == ["m1", "m1", "m1"]
