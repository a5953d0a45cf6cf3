"""The writer on its own, with the real SQLite store and a recording outbox: batching and fallbacks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from chatmq.bridge.writer import Inbound, Writer
from chatmq.core.membership import MembershipView
from chatmq.core.store import AppendResult, NewMessage, Store

pytestmark = pytest.mark.timeout(30)


class RecordingOutbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def publish(self, topic: str, payload: dict[str, Any], qos: int = 1, retain: bool = False) -> None:
        self.events.append((topic, payload))

    def ack(self, mid: int, qos: int) -> None:
        self.events.append(("PUBACK", mid))


class CountingStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.batches: list[int] = []

    def append(self, batch: Sequence[NewMessage], **options: Any) -> list[AppendResult]:
        self.batches.append(len(batch))
        return self._store.append(batch, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class GhostView(MembershipView):
    """Believes in a conversation "ghost" the store does not have, like a view that lags a deletion."""

    def exists(self, conv: str) -> bool:
        return conv == "ghost" or super().exists(conv)

    def is_member(self, conv: str, user: str) -> bool:
        return conv == "ghost" or super().is_member(conv, user)


def item(mid: int, conv: str, cmid: str, sender: str = "alice") -> Inbound:
    return Inbound(NewMessage(conv, sender, cmid, f"body {cmid}", ts=1000 + mid), mid=mid, qos=1)


def run_writer(store: Store, view: MembershipView, items: list[Inbound]) -> RecordingOutbox:
    outbox = RecordingOutbox()
    writer = Writer(store, view, outbox)  # type: ignore[arg-type]
    for it in items:  # queued before the thread starts: they become one batch
        writer.submit(it)
    writer.start()
    deadline = time.monotonic() + 10
    while sum(1 for e in outbox.events if e[0] == "PUBACK") < len(items):
        assert time.monotonic() < deadline, f"writer did not ack everything: {outbox.events}"
        time.sleep(0.01)
    writer.stop()
    return outbox


def test_a_vanished_conversation_rejects_only_its_own_sends(store: Store) -> None:
    counting = CountingStore(store)
    view = GhostView(counting)  # type: ignore[arg-type]
    view.refresh()
    items = [item(1, "c1", "m1"), item(2, "ghost", "g1"), item(3, "c1", "m2"), item(4, "c1", "m1")]
    outbox = run_writer(counting, view, items)  # type: ignore[arg-type]

    assert counting.batches == [4, 1, 1, 1, 1]  # one batch, then one by one after NotFound
    topics = [t for t, _ in outbox.events]
    assert topics == ["chat/c1/msg", "chat/c1/msg"] + ["user/alice/ack"] * 4 + ["PUBACK"] * 4
    msgs = [p for t, p in outbox.events if t == "chat/c1/msg"]
    assert [(m["seq"], m["client_msg_id"]) for m in msgs] == [(1, "m1"), (2, "m2")]
    acks = [p for t, p in outbox.events if t == "user/alice/ack"]
    assert [(a["client_msg_id"], a["status"], a.get("seq")) for a in acks] == [
        ("m1", "received", 1), ("g1", "rejected", None), ("m2", "received", 2), ("m1", "received", 1),
    ]  # fmt: skip
    assert acks[1]["error"]["code"] == "unknown_conversation"
    assert [e[1] for e in outbox.events if e[0] == "PUBACK"] == [1, 2, 3, 4]
    assert [m.client_msg_id for m in store.history("c1").messages] == ["m1", "m2"]


def test_a_burst_is_one_transaction_and_duplicates_are_broadcast_once(store: Store) -> None:
    counting = CountingStore(store)
    view = MembershipView(counting)  # type: ignore[arg-type]
    view.refresh()
    items = [item(i, "c1" if i % 2 else "c2", f"m{i}") for i in range(1, 41)] + [item(41, "c1", "m1")]
    outbox = run_writer(counting, view, items)  # type: ignore[arg-type]

    assert counting.batches == [41]
    for conv in ("c1", "c2"):
        seqs = [p["seq"] for t, p in outbox.events if t == f"chat/{conv}/msg"]
        assert seqs == list(range(1, 21))
    last_ack = [p for t, p in outbox.events if t == "user/alice/ack"][-1]
    assert (last_ack["client_msg_id"], last_ack["seq"]) == ("m1", 1)
    first_puback = next(i for i, e in enumerate(outbox.events) if e[0] == "PUBACK")
    assert all(e[0] == "PUBACK" for e in outbox.events[first_puback:])


@pytest.mark.parametrize("delay_s", [0.0, 0.4])
def test_a_commit_delay_gathers_sends_that_arrive_within_it(store: Store, delay_s: float) -> None:
    """Settings.bridge_commit_delay_ms: sends arriving while the writer waits after a batch's first
    send share its commit; without the delay the first is written at once, alone."""
    counting = CountingStore(store)
    view = MembershipView(counting)  # type: ignore[arg-type]
    view.refresh()
    outbox = RecordingOutbox()
    writer = Writer(counting, view, outbox, commit_delay_s=delay_s)  # type: ignore[arg-type]
    writer.start()
    writer.submit(item(1, "c1", "m1"))
    time.sleep(0.1)
    writer.submit(item(2, "c1", "m2"))
    deadline = time.monotonic() + 10
    while sum(1 for e in outbox.events if e[0] == "PUBACK") < 2:
        assert time.monotonic() < deadline, f"writer did not ack everything: {outbox.events}"
        time.sleep(0.01)
    writer.stop()
    assert counting.batches == ([2] if delay_s else [1, 1])
    assert [p["seq"] for t, p in outbox.events if t == "chat/c1/msg"] == [1, 2]


def test_a_redelivered_duplicate_is_broadcast_again(store: Store) -> None:
    """After a crash between store and fan-out, the broker's redelivery must still reach devices."""
    view = MembershipView(store)
    view.refresh()
    store.append([item(1, "c1", "m1").message])  # stored by a bridge that died before publishing
    redelivered = Inbound(item(1, "c1", "m1").message, mid=7, qos=1, redelivered=True)
    outbox = run_writer(store, view, [redelivered])
    assert [(t, p.get("seq")) for t, p in outbox.events[:2]] == [("chat/c1/msg", 1), ("user/alice/ack", 1)]


def test_sends_of_a_partition_whose_lease_lapsed_are_neither_stored_nor_answered(store: Store) -> None:
    """A partitioned worker re-checks its lease before writing: another worker may own c2 now."""
    view = MembershipView(store)
    view.refresh()
    outbox = RecordingOutbox()
    writer = Writer(store, view, outbox, may_write=lambda conv: conv != "c2")  # type: ignore[arg-type]
    for it in [item(1, "c1", "m1"), item(2, "c2", "lapsed"), item(3, "c1", "m2")]:
        writer.submit(it)
    writer.start()
    deadline = time.monotonic() + 10
    while sum(1 for e in outbox.events if e[0] == "PUBACK") < 3:
        assert time.monotonic() < deadline, f"writer did not PUBACK everything: {outbox.events}"
        time.sleep(0.01)
    writer.stop()
    assert [t for t, _ in outbox.events] == ["chat/c1/msg", "chat/c1/msg", "user/alice/ack", "user/alice/ack"] + [
        "PUBACK"
    ] * 3
    assert [p["client_msg_id"] for t, p in outbox.events if t == "user/alice/ack"] == ["m1", "m2"]
    assert store.history("c2", after=0, limit=10).messages == []
