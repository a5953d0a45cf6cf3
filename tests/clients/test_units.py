"""The client's pure parts: ordering/dedup bookkeeping and the persisted outbox."""

from __future__ import annotations

from pathlib import Path

from clients.catchup import Sequencer
from clients.events import Ack
from clients.outbox import Outbox
from clients.state import LocalState, QueuedSend


def _m(seq: int) -> dict[str, object]:
    return {"conv": "c", "seq": seq, "body": f"m{seq}"}


def _seqs(messages: list[dict[str, object]]) -> list[object]:
    return [m["seq"] for m in messages]


def test_sequencer_orders_dedups_and_reports_gaps() -> None:
    seq = Sequencer()
    assert seq.offer(_m(3)) == []  # before the start point is known, messages wait
    assert _seqs(seq.start(1)) == []
    assert seq.missing_after() == 1  # 2 is missing
    assert _seqs(seq.offer(_m(2))) == [2, 3]
    assert seq.offer(_m(3)) == [] and seq.offer(_m(1)) == []  # duplicates dropped
    assert _seqs(seq.offer(_m(5))) == [] and seq.missing_after() == 3
    assert _seqs(seq.offer(_m(4))) == [4, 5]
    assert seq.missing_after() is None and seq.last == 5


def test_lenient_sequencer_skips_unfillable_gaps() -> None:
    seq = Sequencer(strict=False)
    assert _seqs(seq.offer(_m(7))) == [7]
    assert _seqs(seq.offer(_m(9))) == [9]
    assert seq.offer(_m(8)) == []  # late: already past it


def test_outbox_persists_until_acked(tmp_path: Path) -> None:
    sent: list[str] = []
    path = tmp_path / "state.db"

    def publish(item: QueuedSend) -> None:
        sent.append(item.client_msg_id)

    first = Outbox(LocalState(path), "ann.phone", publish)
    future = first.add(QueuedSend("a", "c", {"client_msg_id": "a", "body": "x"}, 1.0))
    first.add(QueuedSend("b", "c", {"client_msg_id": "b", "body": "y"}, 2.0))
    assert first.settle(Ack("a", "c", "received", 1))
    assert future.result(0).seq == 1
    assert not first.settle(Ack("zzz", "c", "received", 9))  # another device's ack
    first.state.close()

    second = Outbox(LocalState(path), "ann.phone", publish)
    resumed = second.restore()
    assert len(resumed) == 1 and len(second) == 1
    assert second.flush(reconnected=True) == 1
    assert sent == ["a", "b", "b"]  # b went out again with the same client_msg_id
    assert Outbox(LocalState(path), "bob.phone", publish).restore() == []  # owners are kept apart


def test_cursor_only_moves_forward(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s.db")
    state.set_cursor("o", "c", 5)
    state.set_cursor("o", "c", 3)
    assert state.cursor("o", "c") == 5 and state.cursor("o", "other") is None
