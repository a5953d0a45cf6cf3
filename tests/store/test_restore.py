"""The Store contract for the bulk read and restore methods a full export/import is built on
(chatmq/cli/transfer.py), on every backend (the ``store`` fixture: SQLite, mongomock, mongomock with
every query checked against the shard keys, a real MongoDB when CHATMQ_TEST_MONGO_URL is set)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from chatmq.core.protocol import EntryKind
from chatmq.core.store.base import LogEntry, Mute, NewMessage, NotFound, RestoreConflict, Store
from chatmq.core.store.mongo import MongoStore
from chatmq.core.store.sqlite import SQLiteStore
from tests.store.helpers import MEDIA_A, MEDIA_B, TS, msg, populate, snapshot

pytestmark = pytest.mark.timeout(60)


def copy_all(source: Store, target: Store, page: int = 4) -> None:
    users = source.list_users()
    target.restore_users(users)
    convs = source.list_conversations()
    target.restore_conversations(convs)
    for conv in convs:
        after = 0
        while entries := source.log_entries(conv.id, after=after, limit=page):
            target.restore_entries(entries)
            after = entries[-1].message.seq
        target.restore_markers(source.markers(conv.id))
    target.restore_push_targets(source.push_targets([u.id for u in users]))
    target.restore_mutes(source.mutes([c.id for c in convs]))
    for webhook in source.webhooks():
        target.add_webhook(webhook)


@pytest.fixture(params=["sqlite", "mongomock"])
def other(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SQLiteStore(str(tmp_path / "other.db"))
    return MongoStore.mongomock(f"other_{uuid.uuid4().hex}")


def test_log_entries_carry_erasures_and_what_a_deletion_erased(store: Store) -> None:
    populate(store)
    entries = store.log_entries("general")
    assert [e.message.seq for e in entries] == list(range(1, 12))
    by_seq = {e.message.seq: e for e in entries}
    assert by_seq[3].message.erased and by_seq[3].message.body == "" and by_seq[3].message.attachments == ()
    assert by_seq[9].message.erased  # carol's edit of the deleted message
    assert by_seq[10].message.kind == EntryKind.DELETE and by_seq[10].erased_media == (MEDIA_B,)
    assert all(e.erased_media == () for s, e in by_seq.items() if s != 10)
    assert [e.message.seq for e in store.log_entries("general", after=8, limit=2)] == [9, 10]
    assert store.log_entries("general", after=11) == []


def test_everything_restored_into_an_empty_store_reads_the_same(store: Store, other: Store) -> None:
    populate(store)
    copy_all(store, other)
    assert snapshot(other) == snapshot(store)
    # the restored log goes on where it stopped, with the rules applied again to new entries
    results = other.append([msg("general", "bob", "new", "next"),
                            NewMessage("general", "bob", "g12", "", TS, kind=EntryKind.EDIT, target=3)])
    assert results[0].message is not None and results[0].message.seq == 12
    assert results[1].refusal is not None  # seq 3 was deleted
    again = other.append([NewMessage("general", "carol", "g10", "", TS, kind=EntryKind.DELETE, target=3)])
    assert again[0].duplicate and again[0].erased_media == (MEDIA_B,)


def test_a_restore_tells_no_one(store: Store, other: Store) -> None:
    """No notifications, webhooks or conversation events for history that is only moving."""
    populate(store)
    copy_all(store, other)
    assert other.pending_outbox() == [] and other.pending_events() == []


def test_restoring_again_changes_nothing_and_a_partial_restore_resumes(store: Store, other: Store) -> None:
    populate(other)
    entries = other.log_entries("general")
    store.restore_users(other.list_users())
    store.restore_conversations(other.list_conversations())
    assert store.restore_entries(entries[:5]) == 5
    assert store.restore_entries(entries[3:8]) == 3  # overlaps what is there: only the new ones
    assert store.restore_entries(entries) == 3
    assert store.restore_entries(entries) == 0
    assert store.restore_users(other.list_users()) == 0
    assert store.restore_conversations(other.list_conversations()) == 0
    assert store.restore_markers(other.markers("general")) == 2
    assert store.restore_markers(other.markers("general")) == 0
    targets = other.push_targets(["alice", "bob"])
    assert store.restore_push_targets(targets) == 2 and store.restore_push_targets(targets) == 0
    assert store.push_targets(["alice", "bob"]) == targets  # updated_at kept
    mutes = other.mutes(["general", "dm-alice-bob"])
    assert mutes == [Mute("dm-alice-bob", "alice", TS + 3_600_000), Mute("general", "bob", 0)]
    assert store.restore_mutes(mutes) == 2 and store.restore_mutes(mutes) == 0
    assert store.mutes(["general", "dm-alice-bob"]) == mutes
    assert snapshot(store)["conv general"] == snapshot(other)["conv general"]


def test_a_restore_refuses_a_taken_seq_and_a_gap(store: Store) -> None:
    populate(store)
    entries = store.log_entries("general")
    foreign = LogEntry(replace(entries[0].message, id="f" * 32))
    with pytest.raises(RestoreConflict, match="seq 1 holds entry"):
        store.restore_entries([foreign])
    gap = LogEntry(replace(entries[-1].message, seq=20, id="e" * 32, client_msg_id="later"))
    with pytest.raises(RestoreConflict, match="gap"):
        store.restore_entries([gap])
    with pytest.raises(NotFound):
        store.restore_entries([LogEntry(replace(entries[0].message, conv="nowhere"))])
    assert store.log_entries("general") == entries


def test_restore_conversations_needs_its_members(store: Store) -> None:
    populate(store)
    conv = store.get_conversation("general")
    assert conv is not None
    with pytest.raises(NotFound, match="zed"):
        store.restore_conversations([replace(conv, id="other", members=("alice", "zed"))])
    assert store.restore_conversations([replace(conv, members=(*conv.members, "dave"))]) == 1
    assert "dave" in store.memberships()["general"]


def test_media_refs_follow_restored_deletions(store: Store, other: Store) -> None:
    populate(store)
    copy_all(store, other, page=100)
    assert other.media_attached("general", MEDIA_A) and not other.media_attached("general", MEDIA_B)
