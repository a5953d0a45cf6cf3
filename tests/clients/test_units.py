"""The client's pure parts: ordering/dedup bookkeeping and the persisted outbox."""

from __future__ import annotations

from pathlib import Path

from chatmq.clients.catchup import Sequencer
from chatmq.clients.events import Ack
from chatmq.clients.outbox import Outbox
from chatmq.clients.state import LocalState, QueuedSend


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


def test_out_of_order_live_delivery_reaches_the_app_in_order_once_with_a_catch_up() -> None:
    """After a broker restart live deliveries may come out of seq order, with one missing: the app
    gets 1..6 in order, each once, the missing one from history, late duplicates dropped."""
    seq = Sequencer()
    assert _seqs(seq.start(0)) == []
    delivered = _seqs(seq.offer(_m(1))) + _seqs(seq.offer(_m(2)))
    for live in (5, 4, 6):  # 3 is late, the rest out of order
        delivered += _seqs(seq.offer(_m(live)))
    assert delivered == [1, 2] and seq.missing_after() == 2
    delivered += _seqs(seq.take_history(2, [_m(3), _m(4), _m(5), _m(6)]))  # the catch-up page
    delivered += _seqs(seq.offer(_m(3))) + _seqs(seq.offer(_m(5)))  # the late live copies
    assert delivered == [1, 2, 3, 4, 5, 6] and seq.missing_after() is None and seq.holes == []


def test_a_hole_history_confirms_twice_is_skipped() -> None:
    """The store reserved seq 3 and never wrote it: history shows 4 right after 2. Seen once it
    may be a write under way; seen again it is a hole, skipped so 4 and later are delivered."""
    seq = Sequencer()
    seq.start(2)
    assert seq.offer(_m(4)) == [] and seq.missing_after() == 2
    assert seq.take_history(2, [_m(4)]) == [] and seq.missing_after() == 2  # once: wait
    assert _seqs(seq.take_history(2, [_m(4)])) == [4] and seq.holes == [(3, 3)]
    assert _seqs(seq.offer(_m(5))) == [5] and seq.missing_after() is None
    # A hole inside a page (7 missing between 6 and 8) is skipped the same way.
    assert seq.take_history(5, [_m(6), _m(8)]) == [_m(6)] and seq.missing_after() == 6
    assert _seqs(seq.take_history(6, [_m(8), _m(9)])) == [8, 9] and seq.holes == [(3, 3), (7, 7)]


def test_a_gap_a_late_write_fills_is_not_skipped() -> None:
    seq = Sequencer()
    seq.start(2)
    assert seq.take_history(2, [_m(4)]) == []  # 3 not there yet: a write still under way
    assert _seqs(seq.take_history(2, [_m(3), _m(4)])) == [3, 4] and seq.holes == []


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
