"""The Store contract for the log's change entries (replies, edits, deletes, reactions) and the
messages-as-they-stand view, run against every backend (the ``store`` fixture in conftest.py,
including the MongoDB store whose every query is checked against the shard keys)."""

from __future__ import annotations

from typing import Any

import pytest

from chatmq.core.protocol import MAX_REACTIONS_PER_MEMBER, EntryKind, ErrorCode
from chatmq.core.store.base import AppendResult, Change, MessageView, NewMessage, Reactions, Store
from tests.store.helpers import TS, msg, seed

pytestmark = pytest.mark.timeout(30)

MEDIA_A = "a" * 32
MEDIA_B = "b" * 32


def change(kind: str, sender: str, cmid: str, target: int, *, body: str = "", emoji: str | None = None,
           conv: str = "general", ts: int = TS) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_msg_id=cmid, body=body, ts=ts, kind=kind, target=target,
                      emoji=emoji)


def edit(sender: str, cmid: str, target: int, body: str, **kw: Any) -> NewMessage:
    return change(EntryKind.EDIT, sender, cmid, target, body=body, **kw)


def delete(sender: str, cmid: str, target: int, **kw: Any) -> NewMessage:
    return change(EntryKind.DELETE, sender, cmid, target, **kw)


def react(sender: str, cmid: str, target: int, emoji: str, **kw: Any) -> NewMessage:
    return change(EntryKind.REACT, sender, cmid, target, body=emoji, emoji=emoji, **kw)


def unreact(sender: str, cmid: str, target: int, emoji: str, **kw: Any) -> NewMessage:
    return change(EntryKind.UNREACT, sender, cmid, target, emoji=emoji, **kw)


def reply(sender: str, cmid: str, reply_to: int, body: str = "re", conv: str = "general") -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_msg_id=cmid, body=body, ts=TS, reply_to=reply_to)


def one(store: Store, entry: NewMessage, **kw: Any) -> AppendResult:
    (result,) = store.append([entry], **kw)
    return result


def seq_of(result: AppendResult) -> int:
    assert result.refusal is None and result.message is not None, result.refusal
    return result.message.seq


def refused(result: AppendResult) -> ErrorCode:
    assert result.message is None and result.refusal is not None and not result.duplicate, result
    return result.refusal.code


def view(store: Store, conv: str = "general", **kw: Any) -> dict[int, MessageView]:
    return {v.message.seq: v for v in store.message_view(conv, **kw).messages}


def raw(store: Store, conv: str = "general") -> dict[int, dict[str, Any]]:
    return {m.seq: m.to_payload() for m in store.history(conv, limit=200).messages}


def last_seq(store: Store, conv: str = "general") -> int:
    conversation = store.get_conversation(conv)
    assert conversation is not None
    return conversation.last_seq


# --- the log -----------------------------------------------------------------------------------


def test_changes_are_entries_with_their_own_seq_in_the_raw_log(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1", body="helo"), msg("general", "bob", "m2", body="hi")])
    results = store.append([
        edit("alice", "e1", 1, "hello"),
        react("bob", "r1", 1, "👍"),
        reply("bob", "m3", 1, "welcome"),
        unreact("bob", "u1", 1, "👍"),
        delete("bob", "d1", 2),
    ])
    assert [seq_of(r) for r in results] == [3, 4, 5, 6, 7]
    assert last_seq(store) == 7
    log = raw(store)
    assert log[1]["body"] == "helo" and "kind" not in log[1]  # the message as sent; a message has no kind
    assert log[3] == {**log[3], "kind": "edit", "target": 1, "body": "hello", "sender": "alice"}
    assert log[4] == {**log[4], "kind": "react", "target": 1, "emoji": "👍", "body": "👍"}
    assert log[5]["reply_to"] == 1 and "kind" not in log[5] and log[5]["body"] == "welcome"
    assert log[6] == {**log[6], "kind": "unreact", "target": 1, "emoji": "👍"}
    assert log[7] == {**log[7], "kind": "delete", "target": 2, "body": "", "attachments": []}
    assert log[2]["erased"] is True and log[2]["body"] == ""
    assert "reply_to" not in log[2] and "erased" not in log[1]
    for result in results:  # what append returned is what the log holds (the deleted message 2 aside)
        assert result.message is not None and result.message.to_payload() == log[result.message.seq]


def test_a_refused_change_stores_nothing_and_takes_no_seq(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1")])
    results = store.append([
        edit("bob", "e1", 1, "not yours"),
        msg("general", "bob", "m2"),
        delete("bob", "d1", 9),
        react("alice", "r1", 2, "🎉"),
    ])
    assert refused(results[0]) is ErrorCode.NOT_SENDER
    assert refused(results[2]) is ErrorCode.UNKNOWN_TARGET
    assert [seq_of(results[1]), seq_of(results[3])] == [2, 3]
    assert sorted(raw(store)) == [1, 2, 3] and last_seq(store) == 3
    # a refused client_msg_id is not remembered: the same id can be used once the change is valid
    assert refused(one(store, edit("bob", "e1", 1, "still not yours"))) is ErrorCode.NOT_SENDER
    assert seq_of(one(store, edit("bob", "e1", 2, "my own"))) == 4


def test_a_change_may_target_an_entry_stored_earlier_in_the_same_batch(store: Store) -> None:
    seed(store)
    results = store.append([
        msg("general", "alice", "m1", body="typo"),
        edit("alice", "e1", 1, "fixed"),
        react("bob", "r1", 1, "✅"),
        reply("bob", "m2", 1),
        react("bob", "r2", 2, "✅"),  # seq 2 is the edit: not a message
    ])
    assert [seq_of(r) for r in results[:4]] == [1, 2, 3, 4]
    assert refused(results[4]) is ErrorCode.BAD_TARGET
    current = view(store)
    assert current[1].message.body == "fixed" and current[1].reactions == (Reactions("✅", ("bob",)),)


def test_every_target_error_has_its_code(store: Store) -> None:
    seed(store, convs=("general", "random"))
    store.append([msg("general", "alice", "m1"), msg("general", "bob", "m2"), msg("random", "bob", "x1")])
    seq_of(one(store, react("alice", "r1", 1, "👍")))  # seq 3
    seq_of(one(store, delete("bob", "d1", 2)))  # seq 4
    cases = {
        ErrorCode.UNKNOWN_TARGET: [reply("bob", "c1", 99), edit("alice", "c2", 5, "x"), delete("alice", "c3", 50)],
        ErrorCode.BAD_TARGET: [reply("bob", "c4", 3), edit("alice", "c5", 3, "x"), react("bob", "c6", 4, "👍")],
        ErrorCode.TARGET_DELETED: [reply("alice", "c7", 2), edit("bob", "c8", 2, "x"), delete("bob", "c9", 2),
                                   react("alice", "c10", 2, "👍"), unreact("alice", "c11", 2, "👍")],
        ErrorCode.NOT_SENDER: [edit("bob", "c12", 1, "x"), delete("bob", "c13", 1)],
        ErrorCode.ALREADY_REACTED: [react("alice", "c14", 1, "👍")],
        ErrorCode.NOT_REACTED: [unreact("bob", "c15", 1, "👍"), unreact("alice", "c16", 1, "🎉")],
    }
    for code, entries in cases.items():
        for entry, result in zip(entries, store.append(entries), strict=True):
            assert refused(result) is code, (entry, result)
            assert code.value in {ErrorCode(c).value for c in ErrorCode}
    assert last_seq(store) == 4 and last_seq(store, "random") == 1  # nothing was stored
    # the seq numbers are the conversation's own: random's seq 1 is not general's
    assert seq_of(one(store, edit("bob", "c17", 1, "mine", conv="random"))) == 2


# --- replies -----------------------------------------------------------------------------------


def test_replies_reference_an_earlier_message(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1", body="question?")])
    answer = one(store, reply("bob", "m2", 1, "answer"))
    assert answer.message is not None and answer.message.reply_to == 1 and answer.message.kind == "message"
    assert view(store)[2].to_payload()["reply_to"] == 1
    assert view(store)[1].to_payload()["reply_to"] is None
    assert raw(store)[2]["reply_to"] == 1


# --- edits -------------------------------------------------------------------------------------


def test_the_latest_edit_wins_and_the_view_marks_it(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1", body="first")])
    seq_of(one(store, edit("alice", "e1", 1, "second", ts=TS + 10)))
    seq_of(one(store, edit("alice", "e2", 1, "third", ts=TS + 20)))
    current = view(store)[1]
    assert current.message.body == "third"
    assert current.edited == Change(3, "alice", TS + 20)
    assert current.to_payload()["edited"] == {"seq": 3, "ts": TS + 20}
    assert current.message.ts == TS and current.message.id == raw(store)[1]["id"]  # still the original message
    assert [raw(store)[s]["body"] for s in (1, 2, 3)] == ["first", "second", "third"]
    assert view(store)[1].deleted is None


def test_edits_keep_the_attachments(store: Store) -> None:
    seed(store)
    attachment = {"media_id": MEDIA_A, "mime": "image/png", "size": 3}
    store.append([msg("general", "alice", "m1", body="look", attachments=(attachment,))])
    seq_of(one(store, edit("alice", "e1", 1, "look at this")))
    payload = view(store)[1].to_payload()
    assert payload["body"] == "look at this" and payload["attachments"] == [attachment]


def test_the_edit_window(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1")])
    window = 15 * 60 * 1000
    assert refused(one(store, edit("alice", "e1", 1, "late", ts=TS + window + 1), edit_window_ms=window)) \
        is ErrorCode.EDIT_WINDOW_CLOSED  # fmt: skip
    assert seq_of(one(store, edit("alice", "e2", 1, "in time", ts=TS + window), edit_window_ms=window)) == 2
    assert seq_of(one(store, edit("alice", "e3", 1, "no window", ts=TS + 10 * window))) == 3  # 0: no window


# --- deletes -----------------------------------------------------------------------------------


def test_a_delete_erases_the_message_and_its_edits_and_keeps_a_tombstone(store: Store) -> None:
    seed(store)
    attachment = {"media_id": MEDIA_A, "mime": "image/png", "size": 3, "name": "secret.png"}
    store.append([msg("general", "alice", "m1", body="secret one", attachments=(attachment,)),
                  msg("general", "bob", "m2", body="unrelated")])
    store.append([edit("alice", "e1", 1, "secret two"), react("bob", "r1", 1, "😮"), reply("bob", "m3", 1)])
    result = one(store, delete("alice", "d1", 1, ts=TS + 99))
    assert seq_of(result) == 6 and result.erased_media == (MEDIA_A,)

    log = raw(store)
    for seq in (1, 3):  # the message and its edit: erased in place, still in the log
        assert log[seq]["body"] == "" and log[seq]["attachments"] == [] and log[seq]["erased"] is True
    assert log[3]["kind"] == "edit" and log[3]["target"] == 1
    assert log[2]["body"] == "unrelated" and log[5]["body"] == "re"  # nothing else is touched
    assert all("secret" not in str(entry) for entry in log.values())

    tomb = view(store)[1]
    assert tomb.deleted == Change(6, "alice", TS + 99)
    assert tomb.message.body == "" and tomb.message.attachments == () and tomb.edited is None
    assert tomb.reactions == ()
    payload = tomb.to_payload()
    assert payload["deleted"] == {"seq": 6, "by": "alice", "ts": TS + 99} and payload["reactions"] == []
    assert payload["seq"] == 1 and payload["sender"] == "alice" and payload["client_msg_id"] == "m1"
    assert view(store)[5].message.reply_to == 1  # a reply keeps pointing at the tombstone


def test_the_owner_deletes_anyones_message_others_only_their_own(store: Store) -> None:
    seed(store, convs=())
    store.create_conversation("owned", ["alice", "bob", "carol"], owner="carol")
    store.append([msg("owned", "alice", "m1"), msg("owned", "bob", "m2")])
    assert refused(one(store, delete("bob", "d1", 1, conv="owned"))) is ErrorCode.NOT_SENDER
    assert seq_of(one(store, delete("carol", "d2", 1, conv="owned"))) == 3
    assert view(store, "owned")[1].deleted == Change(3, "carol", TS)
    assert refused(one(store, edit("carol", "e1", 2, "owners do not edit", conv="owned"))) is ErrorCode.NOT_SENDER


def test_a_repeated_delete_returns_what_it_erased(store: Store) -> None:
    seed(store)
    attachments = ({"media_id": MEDIA_A, "mime": "image/png", "size": 3}, {"media_id": MEDIA_B, "mime": "text/plain",
                                                                           "size": 5})
    store.append([msg("general", "alice", "m1", attachments=attachments)])
    first = one(store, delete("alice", "d1", 1))
    again = one(store, delete("alice", "d1", 1))
    assert again.duplicate and again.message == first.message
    assert first.erased_media == again.erased_media == (MEDIA_A, MEDIA_B)
    assert refused(one(store, delete("alice", "d2", 1))) is ErrorCode.TARGET_DELETED


def test_media_attached_follows_messages_and_deletes(store: Store) -> None:
    seed(store, convs=("general", "random"))
    pic = ({"media_id": MEDIA_A, "mime": "image/png", "size": 3},)
    assert not store.media_attached("general", MEDIA_A)
    store.append([msg("general", "alice", "m1", attachments=pic), msg("general", "alice", "m2", attachments=pic),
                  msg("random", "alice", "x1", attachments=pic)])
    assert store.media_attached("general", MEDIA_A) and store.media_attached("random", MEDIA_A)
    assert not store.media_attached("general", MEDIA_B)
    seq_of(one(store, delete("alice", "d1", 1)))
    assert store.media_attached("general", MEDIA_A)  # message 2 still attaches it
    seq_of(one(store, delete("alice", "d2", 2)))
    assert not store.media_attached("general", MEDIA_A)
    assert store.media_attached("random", MEDIA_A)


# --- reactions ---------------------------------------------------------------------------------


def test_reactions_one_per_member_emoji_and_message(store: Store) -> None:
    seed(store)
    store.create_user("dave", "h")
    store.add_member("general", "dave")
    store.append([msg("general", "alice", "m1"), msg("general", "alice", "m2")])
    results = store.append([
        react("bob", "r1", 1, "👍"), react("alice", "r2", 1, "🎉"), react("dave", "r3", 1, "👍"),
        react("alice", "r4", 1, "👍"), react("bob", "r5", 2, "👍"), react("bob", "r6", 1, "👍"),
        unreact("dave", "u1", 1, "👍"),
    ])
    assert refused(results[5]) is ErrorCode.ALREADY_REACTED
    assert [seq_of(r) for i, r in enumerate(results) if i != 5] == [3, 4, 5, 6, 7, 8]
    current = view(store)
    assert current[1].reactions == (Reactions("👍", ("bob", "alice")), Reactions("🎉", ("alice",)))
    assert current[1].to_payload()["reactions"] == [
        {"emoji": "👍", "count": 2, "users": ["bob", "alice"]}, {"emoji": "🎉", "count": 1, "users": ["alice"]},
    ]
    assert current[2].reactions == (Reactions("👍", ("bob",)),)
    # taking a reaction back and putting it again moves the member to the end; 👍 keeps its place
    # while anyone has it
    store.append([unreact("bob", "u2", 1, "👍"), react("bob", "r7", 1, "👍")])
    assert view(store)[1].reactions == (Reactions("👍", ("alice", "bob")), Reactions("🎉", ("alice",)))
    store.append([unreact("alice", "u3", 1, "👍"), unreact("bob", "u4", 1, "👍")])
    assert view(store)[1].reactions == (Reactions("🎉", ("alice",)),)
    store.append([react("dave", "r8", 1, "👍")])  # put again once nobody had it: last
    assert view(store)[1].reactions == (Reactions("🎉", ("alice",)), Reactions("👍", ("dave",)))


def test_a_member_has_a_bounded_number_of_reactions_on_one_message(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1")])
    emojis = [f":e{i}:" for i in range(MAX_REACTIONS_PER_MEMBER + 1)]
    results = store.append([react("bob", f"r{i}", 1, e) for i, e in enumerate(emojis)])
    assert all(r.refusal is None for r in results[:-1])
    assert refused(results[-1]) is ErrorCode.TOO_MANY_REACTIONS
    assert seq_of(one(store, react("alice", "ra", 1, ":e0:"))) == MAX_REACTIONS_PER_MEMBER + 2  # others still can
    store.append([unreact("bob", "u0", 1, ":e0:")])
    assert seq_of(one(store, react("bob", "again", 1, emojis[-1]))) > 0


# --- idempotence -------------------------------------------------------------------------------


def test_a_resent_change_is_a_duplicate_and_applies_once(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "m1", body="v1")])
    first = store.append([edit("alice", "e1", 1, "v2"), react("bob", "r1", 1, "👍")])
    store.append([edit("alice", "e2", 1, "v3"), unreact("bob", "u1", 1, "👍")])
    # a device that missed its acks resends the older changes with their ids: nothing goes back
    again = store.append([edit("alice", "e1", 1, "v2"), react("bob", "r1", 1, "👍"), edit("alice", "e1", 1, "x")])
    assert [r.duplicate for r in again] == [True, True, True]
    assert [r.message for r in again] == [first[0].message, first[1].message, first[0].message]
    current = view(store)[1]
    assert current.message.body == "v3" and current.reactions == () and current.edited is not None
    assert last_seq(store) == 5


def test_ids_are_shared_between_messages_and_changes(store: Store) -> None:
    """(conv, sender, client_msg_id) identifies any entry: an id used for a message is taken."""
    seed(store)
    store.append([msg("general", "alice", "same")])
    result = one(store, edit("alice", "same", 1, "x"))
    assert result.duplicate and result.message is not None and result.message.kind == EntryKind.MESSAGE


# --- read state and the view -------------------------------------------------------------------


def test_unread_counts_messages_only_and_not_deleted_ones(store: Store) -> None:
    seed(store)
    store.append([msg("general", "bob", "m1"), msg("general", "bob", "m2"), msg("general", "bob", "m3")])
    store.append([react("bob", "r1", 1, "👍"), edit("bob", "e1", 2, "x"), delete("bob", "d1", 3),
                  reply("bob", "m4", 1)])
    assert store.count_unread("general", "alice", 0) == 3  # m1, m2 and the reply m4
    assert store.count_unread("general", "bob", 0) == 0


@pytest.mark.parametrize("page_size", [1, 3, 50])
def test_walking_the_view_sees_every_message_once(store: Store, page_size: int) -> None:
    seed(store)
    for i in range(12):
        store.append([msg("general", "alice", f"m{i}", body=f"b{i}")])
        if i % 3 == 0:
            target = last_seq(store)
            store.append([react("bob", f"r{i}", target, "👀"), edit("alice", f"e{i}", target, f"edited {i}")])
    messages = [s for s, entry in raw(store).items() if "kind" not in entry]
    assert len(messages) == 12 and last_seq(store) == 20

    backwards: list[int] = []
    page = store.message_view("general", limit=page_size)
    while True:
        backwards = [v.message.seq for v in page.messages] + backwards
        if not page.has_more:
            break
        page = store.message_view("general", before=page.messages[0].message.seq, limit=page_size)
    assert backwards == messages

    forwards: list[int] = []
    cursor = 0
    while True:
        page = store.message_view("general", after=cursor, limit=page_size)
        forwards += [v.message.seq for v in page.messages]
        if not page.has_more:
            break
        cursor = page.messages[-1].message.seq
    assert forwards == messages
    bodies = {v.message.seq: v.message.body for v in store.message_view("general", limit=50).messages}
    assert sum(body.startswith("edited") for body in bodies.values()) == 4
    assert store.message_view("general", after=20).messages == []
    assert store.message_view("nope").messages == []
    with pytest.raises(ValueError):
        store.message_view("general", limit=0)


def test_old_style_messages_have_the_v1_payload(store: Store) -> None:
    seed(store)
    (result,) = store.append([msg("general", "alice", "m1", body="plain")])
    assert result.message is not None
    assert set(result.message.to_payload()) == {"conv", "seq", "id", "sender", "client_msg_id", "body",
                                                "attachments", "ts"}


def test_history_payloads_are_the_history_as_payloads(store: Store) -> None:
    """A store may build a page's payloads from its rows (SQLite does): every kind of entry and
    every bound gives exactly ``[m.to_payload() for m in history(...)]`` and the same has_more."""
    seed(store)
    attachment = {"media_id": MEDIA_A, "mime": "image/png", "size": 3}
    store.append([msg("general", "alice", "m1", body="look", attachments=(attachment,)),
                  msg("general", "bob", "m2", body="two"), msg("general", "alice", "m3", body="three")])
    for entry in (reply("bob", "r1", 1), edit("alice", "e1", 1, "look at this"), react("bob", "x1", 2, "👍"),
                  unreact("bob", "x2", 2, "👍"), delete("alice", "d1", 3)):
        seq_of(one(store, entry))
    kinds = {p.get("kind") for p in raw(store).values()}
    assert kinds == {None, "edit", "react", "unreact", "delete"}
    assert any(p.get("erased") for p in raw(store).values()) and any("reply_to" in p for p in raw(store).values())
    for bounds in ({}, {"before": 6}, {"after": 2}, {"after": 1, "before": 7}, {"before": 1}, {"after": 99}):
        for limit in (1, 3, 50):
            page = store.history("general", limit=limit, **bounds)
            payloads = store.history_payloads("general", limit=limit, **bounds)
            assert payloads.payloads == [m.to_payload() for m in page.messages], (bounds, limit)
            assert payloads.has_more == page.has_more, (bounds, limit)
    assert store.history_payloads("nope").payloads == []
