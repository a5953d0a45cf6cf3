"""The client's pure bookkeeping: Timeline (messages as they stand, from a view page and the log)
against the store's own view, and Receipts (coalesced markers to send, others' markers)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmq.clients.receipts import Marker, Receipts
from chatmq.clients.timeline import Timeline
from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage
from chatmq.core.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(120)

USERS = ("alice", "bob", "carol")
EMOJI = ("👍", "🎉", "👀")

# One operation: (kind, user, target index among the messages so far, emoji or text)
operation = st.tuples(
    st.sampled_from(["message", "reply", "edit", "delete", "react", "unreact"]),
    st.sampled_from(USERS),
    st.integers(min_value=0, max_value=30),
    st.sampled_from(EMOJI),
)


def _entry(store: SQLiteStore, n: int, op: tuple[str, str, int, str]) -> NewMessage:
    kind, user, pick, emoji = op
    messages = [v.message.seq for v in store.message_view("c", limit=200).messages]
    target = messages[pick % len(messages)] if messages else 1
    if kind in ("message", "reply"):
        return NewMessage("c", user, f"c{n}", f"text {n}", n, reply_to=target if kind == "reply" else None)
    if kind == "edit":
        return NewMessage("c", user, f"c{n}", f"edit {n}", n, kind=EntryKind.EDIT, target=target)
    if kind == "delete":
        return NewMessage("c", user, f"c{n}", "", n, kind=EntryKind.DELETE, target=target)
    return NewMessage("c", user, f"c{n}", emoji if kind == "react" else "", n, kind=EntryKind(kind), target=target,
                      emoji=emoji)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=40), cut=st.integers(min_value=0, max_value=40),
       overlap=st.integers(min_value=0, max_value=5))
def test_a_view_page_plus_the_log_after_it_is_the_servers_view(tmp_path: Path, ops: list[Any], cut: int,
                                                                overlap: int) -> None:
    """A client that opens a conversation mid-way (a view page at some point), then applies the log
    from a little before that page's last_seq, ends with exactly the server's view: same text,
    tombstones, reply references, reactions, emoji and user order."""
    store = SQLiteStore(str(tmp_path / f"{uuid.uuid4().hex}.db"))  # hypothesis reuses tmp_path: a file each
    try:
        for user in USERS:
            store.create_user(user, "h")
        store.create_conversation("c", list(USERS), owner="carol")
        timeline = Timeline()
        for n, op in enumerate(ops, 1):
            if n - 1 == cut:
                page = store.message_view("c", limit=200).messages
                last_seq = store.get_conversation("c").last_seq  # type: ignore[union-attr]
                timeline.load([v.to_payload() for v in page], last_seq)
            store.append([_entry(store, n, op)])
        if cut >= len(ops):
            timeline.load([v.to_payload() for v in store.message_view("c", limit=200).messages], 0)
        start = max(0, timeline.last_seq - overlap)  # replaying what the page already has is harmless
        for entry in store.history("c", after=start, limit=200).messages:
            timeline.apply(entry.to_payload())
        expected = {v.message.seq: v.to_payload() for v in store.message_view("c", limit=200).messages}
        got = dict(timeline.messages)
        for payload in got.values():  # the id of a message first seen live is as sent
            payload.pop("id", None)
        for payload in expected.values():
            payload.pop("id", None)
        for seq, payload in expected.items():  # a tombstone first seen live knows its deletion entry
            if payload["deleted"] and got[seq]["deleted"] and got[seq]["deleted"]["seq"] is None:
                got[seq]["deleted"] = payload["deleted"]
        assert got == expected
    finally:
        store.close()


def test_apply_reports_what_changed() -> None:
    timeline = Timeline()
    base = {"conv": "c", "id": "x", "client_msg_id": "m", "attachments": [], "ts": 1}
    assert timeline.apply({**base, "seq": 1, "sender": "alice", "body": "hi"}).kind == "message"  # type: ignore[union-attr]
    applied = timeline.apply({**base, "seq": 2, "sender": "bob", "body": "👍", "kind": "react", "target": 1,
                              "emoji": "👍"})
    assert applied is not None and (applied.seq, applied.kind) == (1, "react")
    assert timeline.apply({**base, "seq": 3, "sender": "bob", "body": "", "kind": "edit", "target": 99}) is None
    assert timeline.apply({"conv": "c", "seq": 4, "sender": "bob", "ts": 1, "notice": True}) is None
    assert timeline.get(1)["reactions"] == [{"emoji": "👍", "count": 1, "users": ["bob"]}]  # type: ignore[index]
    assert timeline.last_seq == 3


def test_receipts_are_coalesced_and_only_move_forward() -> None:
    receipts = Receipts()
    assert receipts.want("c", "delivered", 3)
    assert receipts.want("c", "delivered", 5)
    assert not receipts.want("c", "delivered", 4)
    assert receipts.want("c", "read", 4)
    assert sorted(receipts.take_due()) == [("c", "delivered", 5), ("c", "read", 4)]
    assert receipts.take_due() == []
    receipts.sent("c", "delivered", 5)
    receipts.sent("c", "read", 4)
    assert not receipts.want("c", "delivered", 5)
    receipts.want("c", "delivered", 6)
    receipts.want("c", "read", 7)  # a read covers the delivered one due with it
    assert receipts.take_due() == [("c", "read", 7)]
    receipts.retry("c", "read", 7)  # could not publish: due again
    assert receipts.take_due() == [("c", "read", 7)]
    receipts.sent("c", "read", 7)
    assert not receipts.want("c", "delivered", 7)  # reading implies delivery


def test_others_markers_only_move_forward() -> None:
    receipts = Receipts()
    receipts.seed("c", [{"user": "bob", "delivered_seq": 4, "read_seq": 2}])
    assert receipts.announced("c", {"user": "bob", "seq": 3, "status": "read", "ts": 1})
    assert not receipts.announced("c", {"user": "bob", "seq": 4, "status": "delivered", "ts": 1})
    assert not receipts.announced("c", {"user": "bob", "seq": "x", "status": "read"})
    assert receipts.announced("c", {"user": "carol", "seq": 6, "status": "read", "ts": 1})
    assert receipts.of("c") == {"bob": Marker("bob", 4, 3), "carol": Marker("carol", 6, 6)}
    receipts.forget("c")
    assert receipts.of("c") == {}
