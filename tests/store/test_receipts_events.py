"""The Store contract for read state (markers) and the conversation-event outbox, every backend."""

from __future__ import annotations

import pytest

from chatmq.core.store.base import (
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    EVENT_TITLE_CHANGED,
    NotFound,
    ReceiptOutcome,
    ReceiptUpdate,
    Store,
)
from tests.store.helpers import fill, msg, seed

pytestmark = pytest.mark.timeout(30)


def receipt(seq: int, status: str = "read", user: str = "bob", conv: str = "general", ts: int = 1) -> ReceiptUpdate:
    return ReceiptUpdate(conv=conv, user=user, seq=seq, status=status, ts=ts)


def outcomes(store: Store, *updates: ReceiptUpdate) -> list[ReceiptOutcome]:
    return [r.outcome for r in store.apply_receipts(list(updates))]


def test_markers_only_move_forward(store: Store) -> None:
    seed(store)
    fill(store, "general", 5)
    assert outcomes(store, receipt(2, "delivered")) == [ReceiptOutcome.MOVED]
    assert outcomes(store, receipt(3, "read", ts=7)) == [ReceiptOutcome.MOVED]
    (marker,) = store.markers("general")
    assert (marker.user, marker.delivered_seq, marker.read_seq, marker.updated_at) == ("bob", 3, 3, 7)
    # lower or equal: ignored, for either status; reading implied delivery up to 3
    assert outcomes(store, receipt(3), receipt(1), receipt(3, "delivered"), receipt(2, "delivered")) == [
        ReceiptOutcome.UNCHANGED
    ] * 4
    assert outcomes(store, receipt(5, "delivered")) == [ReceiptOutcome.MOVED]
    (marker,) = store.markers("general")
    assert (marker.delivered_seq, marker.read_seq) == (5, 3)
    # within one batch the later update sees the earlier one
    assert outcomes(store, receipt(4), receipt(4), receipt(5)) == [
        ReceiptOutcome.MOVED, ReceiptOutcome.UNCHANGED, ReceiptOutcome.MOVED,
    ]  # fmt: skip
    assert store.markers_of("bob")["general"].read_seq == 5
    assert store.markers_of("alice") == {}


def test_receipts_above_last_seq_or_unknown_conversation_store_nothing(store: Store) -> None:
    seed(store)
    fill(store, "general", 2)
    results = store.apply_receipts([receipt(3), receipt(1, conv="nowhere"), receipt(2, "delivered")])
    assert [r.outcome for r in results] == [
        ReceiptOutcome.SEQ_AHEAD, ReceiptOutcome.UNKNOWN_CONVERSATION, ReceiptOutcome.MOVED,
    ]  # fmt: skip
    assert results[0].last_seq == 2
    (marker,) = store.markers("general")
    assert (marker.delivered_seq, marker.read_seq) == (2, 0)
    assert store.markers("nowhere") == []


def test_markers_are_per_user_and_conversation(store: Store) -> None:
    seed(store, convs=("general", "other"))
    fill(store, "general", 3)
    fill(store, "other", 3)
    store.apply_receipts([receipt(1), receipt(2, user="alice"), receipt(3, conv="other")])
    assert {(m.user, m.read_seq) for m in store.markers("general")} == {("alice", 2), ("bob", 1)}
    assert {conv: m.read_seq for conv, m in store.markers_of("bob").items()} == {"general": 1, "other": 3}


def test_unread_counts_exclude_own_messages(store: Store) -> None:
    seed(store)
    fill(store, "general", 4, sender="alice")
    store.append([msg("general", "bob", "b1")])
    assert store.count_unread("general", "bob", 0) == 4
    assert store.count_unread("general", "bob", 3) == 1
    assert store.count_unread("general", "alice", 0) == 1
    assert store.count_unread("general", "alice", 5) == 0


def test_changes_record_events_in_order(store: Store) -> None:
    seed(store, convs=())
    store.create_conversation("room", ["alice", "bob"], title="Room", owner="alice")
    store.add_member("room", "carol")
    store.add_member("room", "carol")  # no change, no event
    store.set_title("room", "New")
    store.remove_member("room", "bob")
    store.remove_member("room", "bob")
    events = store.pending_events()
    assert [(e.kind, e.subject) for e in events] == [
        (EVENT_CREATED, None), (EVENT_MEMBER_ADDED, "carol"), (EVENT_TITLE_CHANGED, None),
        (EVENT_MEMBER_REMOVED, "bob"),
    ]  # fmt: skip
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[0].recipients == ("alice", "bob") and events[0].title == "Room"
    assert set(events[1].recipients) == {"alice", "bob", "carol"}
    assert events[2].title == "New"
    assert set(events[3].recipients) == {"alice", "bob", "carol"}, "the removed member is told too"
    assert all(e.conv == "room" and e.ts > 0 for e in events)
    assert store.get_conversation("room").title == "New"  # type: ignore[union-attr]

    assert len(store.pending_events(limit=2)) == 2
    store.delete_events([events[0].id, events[1].id])
    store.delete_events([events[0].id])  # idempotent
    assert [e.id for e in store.pending_events()] == [events[2].id, events[3].id]


def test_set_title_of_unknown_conversation(store: Store) -> None:
    with pytest.raises(NotFound):
        store.set_title("ghost", "x")
    assert store.pending_events() == []
