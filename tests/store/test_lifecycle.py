"""The Store contract of the data lifecycle (retention purges, an operator's erasure of messages
and users, deleting a conversation), run against every backend (the ``store`` fixture, including
the MongoDB store whose every query is checked against the shard keys)."""

from __future__ import annotations

import pytest

from chatmq.core.protocol import EntryKind
from chatmq.core.search import SearchQuery, parse_query
from chatmq.core.store.base import (
    ERASED_BY_ADMIN,
    OUTBOX_EVENT,
    Change,
    Delivery,
    LogAccess,
    NewMessage,
    NotFound,
    PushTarget,
    ReceiptUpdate,
    Store,
)
from tests.store.helpers import TS, msg, seed
from tests.store.test_entries import delete, edit, react, seq_of, unreact

pytestmark = pytest.mark.timeout(30)

MEDIA_A = "a" * 32
MEDIA_B = "b" * 32
DAY = 86_400_000


def at(conv: str, sender: str, cmid: str, ts: int, body: str = "hi", **extra: object) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_msg_id=cmid, body=body, ts=ts, **extra)  # type: ignore[arg-type]


def seqs(store: Store, conv: str = "general") -> list[int]:
    return [m.seq for m in store.history(conv, limit=200).messages]


def test_log_access_agrees_with_the_conversation(store: Store) -> None:
    """The history route's one read (bounds and membership) answers as get_conversation does,
    through appends, a purge that moves first_seq and membership changes."""

    def expected(user: str) -> LogAccess | None:
        conv = store.get_conversation("general")
        return None if conv is None else LogAccess("general", conv.last_seq, conv.first_seq, user in conv.members)

    seed(store)
    assert store.log_access("general", "alice") == LogAccess("general", 0, 1, True)
    assert store.log_access("general", "carol") == LogAccess("general", 0, 1, False)
    assert store.log_access("nope", "alice") is None
    store.append([at("general", "alice", f"old-{i}", TS + i) for i in range(4)])
    store.purge_expired("general", TS + DAY, 2)
    for user in ("alice", "bob", "carol", "ghost"):
        assert store.log_access("general", user) == expected(user), user
    assert store.log_access("general", "alice") == LogAccess("general", 4, 3, True)
    store.add_member("general", "carol")
    store.remove_member("general", "alice")
    assert store.log_access("general", "carol") == LogAccess("general", 4, 3, True)
    assert store.log_access("general", "alice") == LogAccess("general", 4, 3, False)
    store.delete_conversation("general")
    assert store.log_access("general", "bob") is None


# --- retention ---------------------------------------------------------------------------------
def test_a_new_conversation_is_retained_from_seq_1_under_the_default_policy(store: Store) -> None:
    seed(store)
    conv = store.get_conversation("general")
    assert conv is not None and conv.first_seq == 1 and conv.retention_days is None
    store.set_retention("general", 30)
    assert store.get_conversation("general").retention_days == 30  # type: ignore[union-attr]
    store.set_retention("general", None)
    assert store.get_conversation("general").retention_days is None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.set_retention("nope", 1)
    with pytest.raises(NotFound):
        store.purge_expired("nope", TS, 10)


def test_a_purge_removes_the_oldest_expired_entries_in_bounded_batches(store: Store) -> None:
    seed(store)
    store.append([at("general", "alice", f"old-{i}", TS + i, body=f"old {i}") for i in range(5)])
    store.append([at("general", "bob", f"new-{i}", TS + DAY + i, body=f"new {i}") for i in range(3)])
    cutoff = TS + DAY

    first = store.purge_expired("general", cutoff, 2)
    assert first.seqs == (1, 2) and first.first_seq == 3 and first.more
    assert seqs(store) == [3, 4, 5, 6, 7, 8]
    assert store.get_conversation("general").first_seq == 3  # type: ignore[union-attr]

    second = store.purge_expired("general", cutoff, 3)
    assert second.seqs == (3, 4, 5) and second.first_seq == 6 and not second.more
    third = store.purge_expired("general", cutoff, 3)
    assert third.seqs == () and third.first_seq == 6 and not third.more
    page = store.history("general", limit=50)
    assert [m.body for m in page.messages] == ["new 0", "new 1", "new 2"] and not page.has_more
    assert not store.history("general", before=6).messages
    assert [v.message.seq for v in store.message_view("general").messages] == [6, 7, 8]
    conv = store.get_conversation("general")
    assert conv is not None and conv.last_seq == 8 and conv.first_seq == 6


def test_a_purge_stops_at_the_first_entry_that_is_not_expired(store: Store) -> None:
    """The retained log stays one run of seqs: an older entry behind a younger one waits."""
    seed(store)
    store.append([at("general", "alice", "a", TS), at("general", "alice", "b", TS + 2 * DAY),
                  at("general", "alice", "c", TS)])
    assert store.purge_expired("general", TS + DAY, 10).seqs == (1,)
    assert seqs(store) == [2, 3]


def test_a_purge_takes_the_state_of_what_it_removes_and_the_text_of_retained_edits(store: Store) -> None:
    seed(store)
    target = seq_of(store.append([at("general", "alice", "m", TS, body="secret",
                                     attachments=({"media_id": MEDIA_A, "mime": "image/png"},))])[0])
    seq_of(store.append([react("bob", "r", target, "👍")])[0])
    later = seq_of(store.append([edit("alice", "e", target, "still secret", ts=TS + 2 * DAY)])[0])
    store.append([at("general", "bob", "keep", TS + 2 * DAY, body="kept")])
    store.purge_expired("general", TS + DAY, 1)  # the message goes; the reaction entry is not expired either
    purged = store.purge_expired("general", TS + DAY, 10)
    assert purged.seqs == (2,)  # the reaction entry (ts TS)
    (edit_entry, kept) = [m for m in store.history("general").messages if m.seq >= later]
    assert edit_entry.erased and edit_entry.body == "" and edit_entry.kind == EntryKind.EDIT
    assert kept.body == "kept"
    assert not store.media_attached("general", MEDIA_A)
    assert [v.message.body for v in store.message_view("general").messages] == ["kept"]


def test_a_purge_reports_the_media_its_messages_attached(store: Store) -> None:
    seed(store)
    store.append([at("general", "alice", "m", TS, attachments=({"media_id": MEDIA_A, "mime": "image/png"},))])
    store.append([at("general", "alice", "n", TS + 2 * DAY, attachments=({"media_id": MEDIA_B, "mime": "image/png"},))])
    purged = store.purge_expired("general", TS + DAY, 10)
    assert purged.media == (MEDIA_A,)
    assert not store.media_attached("general", MEDIA_A) and store.media_attached("general", MEDIA_B)


def test_appends_after_a_purge_continue_the_seqs_and_never_refill_purged_ones(store: Store) -> None:
    seed(store)
    store.append([at("general", "alice", f"o{i}", TS) for i in range(3)])
    store.purge_expired("general", TS + 1, 10)
    (result,) = store.append([at("general", "bob", "after", TS + 5)])
    assert result.message is not None and result.message.seq == 4
    assert seqs(store) == [4]


def test_a_change_to_a_purged_message_is_refused_as_not_in_the_log(store: Store) -> None:
    seed(store)
    target = seq_of(store.append([at("general", "alice", "m", TS)])[0])
    store.append([at("general", "alice", "n", TS + 2 * DAY)])
    store.purge_expired("general", TS + DAY, 10)
    (result,) = store.append([edit("alice", "e", target, "x", ts=TS + 2 * DAY)])
    assert result.refusal is not None and result.refusal.code.value == "unknown_target"


# --- an operator's erasure of messages ----------------------------------------------------------
def test_erasing_messages_makes_tombstones_like_a_deletion_by_the_operator(store: Store) -> None:
    seed(store)
    target = seq_of(store.append([msg("general", "alice", "m", body="secret",
                                      attachments=({"media_id": MEDIA_A, "mime": "image/png"},))])[0])
    edit_seq = seq_of(store.append([edit("alice", "e", target, "edited secret")])[0])
    store.append([react("bob", "r", target, "👍")])
    other = seq_of(store.append([msg("general", "bob", "o", body="unrelated")])[0])

    erased = store.erase_messages("general", [target, edit_seq, other + 100], ERASED_BY_ADMIN, TS + 9)
    assert erased.seqs == (target,) and erased.media == (MEDIA_A,)
    views = {v.message.seq: v for v in store.message_view("general").messages}
    tomb = views[target]
    assert tomb.message.body == "" and tomb.message.attachments == () and tomb.reactions == ()
    assert tomb.deleted == Change(target, ERASED_BY_ADMIN, TS + 9) and tomb.edited is None
    assert views[other].message.body == "unrelated"
    raw = {m.seq: m for m in store.history("general").messages}
    assert raw[target].erased and raw[target].body == "" and raw[edit_seq].erased and raw[edit_seq].body == ""
    assert not store.media_attached("general", MEDIA_A)
    # idempotent: erased once
    assert store.erase_messages("general", [target], ERASED_BY_ADMIN, TS + 10).seqs == ()
    with pytest.raises(NotFound):
        store.erase_messages("nope", [1], ERASED_BY_ADMIN, TS)


def test_an_erased_message_refuses_changes_as_a_deleted_one(store: Store) -> None:
    seed(store)
    target = seq_of(store.append([msg("general", "alice", "m")])[0])
    store.erase_messages("general", [target], ERASED_BY_ADMIN, TS)
    (result,) = store.append([edit("alice", "e", target, "x")])
    assert result.refusal is not None and result.refusal.code.value == "target_deleted"


def test_messages_of_pages_through_a_senders_live_messages(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice" if i % 2 else "bob", f"c{i}") for i in range(10)])
    mine = store.messages_of("general", "alice", limit=3)
    assert mine == [2, 4, 6]
    assert store.messages_of("general", "alice", after=6) == [8, 10]
    store.append([delete("alice", "d", 8)])
    assert store.messages_of("general", "alice", after=6) == [10]
    store.append([react("alice", "r", 1, "👍")])
    assert store.messages_of("general", "alice", after=10) == []  # a reaction is not a message


def test_erase_reactions_takes_one_members_reactions_and_their_entries(store: Store) -> None:
    seed(store)
    target = seq_of(store.append([msg("general", "alice", "m")])[0])
    store.append([react("bob", "r1", target, "👍"), react("alice", "r2", target, "👍"),
                  react("bob", "r3", target, "🎉"), unreact("bob", "u3", target, "🎉")])
    assert store.erase_reactions("general", "bob") == 1
    (view,) = store.message_view("general").messages
    assert [(r.emoji, r.users) for r in view.reactions] == [("👍", ("alice",))]
    bobs = [m for m in store.history("general").messages if m.sender == "bob"]
    assert bobs and all(m.erased and m.body == "" and m.emoji is None for m in bobs)
    alices = [m for m in store.history("general").messages if m.kind == EntryKind.REACT and m.sender == "alice"]
    assert alices[0].emoji == "👍"


# --- a user's erasure: the account part ------------------------------------------------------------
def test_forget_user_keeps_the_id_and_drops_the_account_data(store: Store) -> None:
    seed(store, ("general", "other"))
    store.set_profile("alice", "Alice", MEDIA_A)
    store.apply_receipts([ReceiptUpdate("general", "alice", 0, "read", TS)])
    store.append([msg("general", "bob", "m")])
    store.apply_receipts([ReceiptUpdate("general", "alice", 1, "read", TS)])
    store.set_mute("general", "alice", 0)
    store.put_push_target(PushTarget("alice", "phone", "fcm", "tok"))
    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-bob"))
    store.pending_events()
    store.delete_events([e.id for e in store.pending_events()])
    version = store.users_version()

    assert store.forget_user("alice") == ["general", "other"]
    user = store.get_user("alice")
    assert user is not None and user.disabled and user.password_hash == ""
    assert user.display_name is None and user.avatar is None
    assert store.users_version() != version
    assert store.markers_of("alice") == {}
    assert store.mute("general", "alice") is None
    assert store.push_targets(["alice"]) == [] and len(store.push_targets(["bob"])) == 1
    assert store.list_conversations(member="alice") == []
    assert store.get_conversation("general").members == ("bob",)  # type: ignore[union-attr]
    removed = [e for e in store.pending_events() if e.kind == "member_removed"]
    assert sorted(e.conv for e in removed) == ["general", "other"]
    with pytest.raises(NotFound):
        store.forget_user("nobody")


# --- deleting a conversation ----------------------------------------------------------------------
def test_delete_conversation_removes_it_and_everything_of_it(store: Store) -> None:
    seed(store, ("general", "other"))
    store.append([msg("general", "alice", "m", attachments=({"media_id": MEDIA_A, "mime": "image/png"},)),
                  msg("other", "alice", "m", body="stays")])
    store.append([react("bob", "r", 1, "👍")])
    store.apply_receipts([ReceiptUpdate("general", "bob", 1, "read", TS)])
    store.set_mute("general", "bob", 0)
    store.add_deliveries([Delivery(id="d1", channel="webhook", target="w", order_key="w:general",
                                   payload={"conv": "general"}, next_at=0),
                          Delivery(id="d2", channel="webhook", target="w", order_key="w:other",
                                   payload={"conv": "other"}, next_at=0)])
    store.delete_events([e.id for e in store.pending_events()])
    version = store.membership_version()

    erased = store.delete_conversation("general")
    assert erased.media == (MEDIA_A,)
    assert store.get_conversation("general") is None
    assert "general" not in store.memberships() and store.membership_version() != version
    assert [c.id for c in store.list_conversations(member="alice")] == ["other"]
    assert store.history("general").messages == [] and store.message_view("general").messages == []
    assert not store.media_attached("general", MEDIA_A)
    assert "general" not in store.markers_of("bob") and store.mute("general", "bob") is None
    assert store.conversation_deliveries("general") == [] and len(store.conversation_deliveries("other")) == 1
    assert all(e.conv != "general" or e.kind == OUTBOX_EVENT for e in store.pending_outbox())
    told = sorted(e.subject or "" for e in store.pending_events() if e.conv == "general")
    assert told == ["alice", "bob"]
    assert [m.body for m in store.history("other").messages] == ["stays"]
    with pytest.raises(NotFound):
        store.delete_conversation("general")
    # the id can be used again, from seq 1
    store.create_conversation("general", ["alice"])
    (again,) = store.append([msg("general", "alice", "m")])
    assert again.message is not None and again.message.seq == 1 and not again.duplicate


# --- the search index follows every erasure ---------------------------------------------------------
def found(store: Store, user: str, q: str) -> list[tuple[str, int]]:
    page = store.search(user, SearchQuery(parse_query(q), limit=50))
    return [(v.message.conv, v.message.seq) for v in page.messages]


def test_purged_erased_and_deleted_messages_are_never_found(store: Store) -> None:
    seed(store, ("general", "other"))
    store.append([at("general", "alice", "old", TS, body="zebra purged"),
                  at("general", "bob", "new", TS + 2 * DAY, body="zebra kept"),
                  at("general", "bob", "red", TS + 2 * DAY, body="zebra redacted"),
                  at("other", "alice", "o", TS + 2 * DAY, body="zebra gone with it")])
    assert len(found(store, "alice", "zebra")) == 4
    store.purge_expired("general", TS + DAY, 10)
    store.erase_messages("general", [3], ERASED_BY_ADMIN, TS + 3 * DAY)
    store.delete_conversation("other")
    assert found(store, "alice", "zebra") == [("general", 2)]
    assert found(store, "alice", "purged") == [] and found(store, "alice", "redacted") == []
