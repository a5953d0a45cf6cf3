"""The Store contract, run against every backend (see the ``store`` fixture in conftest.py)."""

from __future__ import annotations

import pytest

from chatmq.core.store import mongo as mongo_store
from chatmq.core.store import sqlite as sqlite_store
from chatmq.core.store.base import AlreadyExists, HistoryPage, MembershipChanges, NotFound, Store
from tests.store.helpers import fill, msg, seed

pytestmark = pytest.mark.timeout(30)


def seqs(page: HistoryPage) -> list[int]:
    return [m.seq for m in page.messages]


# --- users ------------------------------------------------------------------------------------


def test_user_crud(store: Store) -> None:
    created = store.create_user("bob", "h1")
    store.create_user("alice", "h2")
    assert created.id == "bob" and created.password_hash == "h1" and not created.disabled
    assert created.created_at > 0
    assert store.get_user("bob") == created
    assert store.get_user("nobody") is None
    assert [u.id for u in store.list_users()] == ["alice", "bob"]

    store.set_password("bob", "h3")
    store.set_disabled("bob", True)
    user = store.get_user("bob")
    assert user is not None and user.password_hash == "h3" and user.disabled
    store.set_disabled("bob", False)
    assert store.get_user("bob").disabled is False  # type: ignore[union-attr]


def test_user_errors(store: Store) -> None:
    store.create_user("alice", "h")
    with pytest.raises(AlreadyExists):
        store.create_user("alice", "other")
    assert store.get_user("alice").password_hash == "h"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.set_password("ghost", "h")
    with pytest.raises(NotFound):
        store.set_disabled("ghost", True)
    for bad in ("", "a/b", "a+b", "#", "$sys", "@bridge", "x" * 65):
        with pytest.raises(ValueError):
            store.create_user(bad, "h")
    assert [u.id for u in store.list_users()] == ["alice"]


# --- conversations ----------------------------------------------------------------------------


def test_conversation_create_get_list(store: Store) -> None:
    seed(store, convs=())
    conv = store.create_conversation("zeta", ["bob", "alice", "bob"], title="Zeta ✨", owner="alice")
    assert conv.id == "zeta" and conv.members == ("alice", "bob") and conv.last_seq == 0
    assert conv.title == "Zeta ✨" and conv.owner == "alice" and conv.created_at > 0
    assert store.get_conversation("zeta") == conv
    assert store.get_conversation("nope") is None

    store.create_conversation("alpha", ["carol"])
    store.create_conversation("empty", [])
    assert [c.id for c in store.list_conversations()] == ["alpha", "empty", "zeta"]
    assert [c.id for c in store.list_conversations(member="alice")] == ["zeta"]
    assert [c.id for c in store.list_conversations(member="carol")] == ["alpha"]
    assert store.list_conversations(member="ghost") == []
    listed = {c.id: c for c in store.list_conversations()}
    assert listed["zeta"].members == ("alice", "bob") and listed["empty"].members == ()


def test_conversation_errors_store_nothing(store: Store) -> None:
    seed(store)
    version = store.membership_version()
    with pytest.raises(AlreadyExists):
        store.create_conversation("general", ["carol"])
    assert store.get_conversation("general").members == ("alice", "bob")  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="ghost1"):
        store.create_conversation("new", ["alice", "ghost1", "ghost2"])
    assert store.get_conversation("new") is None
    with pytest.raises(ValueError):
        store.create_conversation("bad/id", ["alice"])
    assert store.membership_version() == version


def test_add_remove_member(store: Store) -> None:
    seed(store)
    store.add_member("general", "carol")
    store.add_member("general", "carol")  # idempotent
    assert store.get_conversation("general").members == ("alice", "bob", "carol")  # type: ignore[union-attr]
    assert [c.id for c in store.list_conversations(member="carol")] == ["general"]

    store.remove_member("general", "alice")
    store.remove_member("general", "alice")  # idempotent
    store.remove_member("general", "ghost")  # not a member, not even a user: nothing to do
    assert store.get_conversation("general").members == ("bob", "carol")  # type: ignore[union-attr]
    assert store.list_conversations(member="alice") == []

    with pytest.raises(NotFound):
        store.add_member("general", "ghost")
    with pytest.raises(NotFound):
        store.add_member("nope", "alice")
    with pytest.raises(NotFound):
        store.add_member("nope", "ghost")
    with pytest.raises(NotFound):
        store.remove_member("nope", "alice")
    assert store.get_conversation("nope") is None
    assert store.get_conversation("general").members == ("bob", "carol")  # type: ignore[union-attr]


def test_membership_version_moves_on_every_change_only(store: Store) -> None:
    seed(store, convs=())
    seen = [store.membership_version()]

    def changed() -> None:
        version = store.membership_version()
        assert version not in seen
        seen.append(version)

    store.create_conversation("general", ["alice"])
    changed()
    store.add_member("general", "bob")
    changed()
    store.remove_member("general", "alice")
    changed()
    store.create_conversation("empty", [])
    changed()

    # reads, user changes and messages leave it alone
    store.memberships()
    store.list_conversations()
    store.get_conversation("general")
    store.create_user("dave", "h")
    store.set_disabled("dave", True)
    store.append([msg("general", "bob", "c1")])
    store.history("general")
    assert store.membership_version() == seen[-1]


def test_membership_changes_name_each_changed_conversation_once(store: Store) -> None:
    seed(store, convs=("general", "random"))
    start = store.membership_version()
    assert store.membership_changes(start) == MembershipChanges(start, {})
    store.add_member("general", "carol")
    store.remove_member("general", "alice")
    store.add_member("general", "alice")  # general changed three times: named once, as it is now
    store.create_conversation("solo", ["carol"])
    store.create_conversation("empty", [])
    store.set_title("random", "not a membership change")
    store.add_member("general", "carol")  # already a member: no change, no version
    now = store.membership_version()
    assert now == start + 5
    assert store.membership_changes(start) == MembershipChanges(now, {
        "general": frozenset({"alice", "bob", "carol"}),
        "solo": frozenset({"carol"}),
        "empty": frozenset(),
    })
    assert store.membership_changes(now - 1) == MembershipChanges(now, {"empty": frozenset()})
    assert store.membership_changes(now) == MembershipChanges(now, {})
    assert store.membership_changes(now + 1) is None  # a version the store never had


def test_membership_changes_are_none_once_the_log_was_pruned_past_them(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (sqlite_store, mongo_store):
        monkeypatch.setattr(module, "MEMBERSHIP_LOG_KEEP", 5)
        monkeypatch.setattr(module, "MEMBERSHIP_LOG_PRUNE_EVERY", 10)
    seed(store, convs=())
    start = store.membership_version()
    for i in range(12 - start % 10):  # past a multiple of 10: versions up to 5 below it are pruned
        store.create_conversation(f"c{i}", ["alice"])
    now = store.membership_version()
    pruned_to = now - now % 10 - 5
    assert store.membership_changes(pruned_to - 1) is None  # the caller reloads everything
    changes = store.membership_changes(pruned_to)
    assert changes is not None and changes.version == now and len(changes.members) == now - pruned_to


def test_users_version_moves_on_every_user_change_only(store: Store) -> None:
    seen = [store.users_version()]

    def changed() -> None:
        now = store.users_version()
        assert now != seen[-1]
        seen.append(now)

    store.create_user("alice", "h1")
    changed()
    store.set_password("alice", "h2")
    changed()
    store.set_disabled("alice", True)
    changed()
    with pytest.raises(AlreadyExists):
        store.create_user("alice", "h3")
    with pytest.raises(NotFound):
        store.set_disabled("nobody", True)
    store.list_users()
    store.create_conversation("general", ["alice"])
    store.add_member("general", "alice")
    assert store.users_version() == seen[-1]


def test_memberships(store: Store) -> None:
    seed(store, convs=("general", "random"))
    store.create_conversation("solo", ["carol"])
    store.create_conversation("empty", [])
    store.remove_member("random", "bob")
    assert store.memberships() == {
        "general": frozenset({"alice", "bob"}),
        "random": frozenset({"alice"}),
        "solo": frozenset({"carol"}),
        "empty": frozenset(),
    }


# --- append -----------------------------------------------------------------------------------


def test_append_assigns_gapless_seqs_per_conversation(store: Store) -> None:
    seed(store, convs=("a", "b"))
    batch = [msg("a", "alice", "1"), msg("b", "alice", "1"), msg("a", "bob", "1"), msg("a", "alice", "2"),
             msg("b", "bob", "x")]
    results = store.append(batch)
    assert [(r.message.conv, r.message.seq, r.duplicate) for r in results] == [
        ("a", 1, False), ("b", 1, False), ("a", 2, False), ("a", 3, False), ("b", 2, False),
    ]
    for item, result in zip(batch, results, strict=True):
        assert (result.message.sender, result.message.client_msg_id) == (item.sender, item.client_msg_id)
        assert result.message.body == item.body and result.message.ts == item.ts
    assert len({r.message.id for r in results}) == len(results)
    assert all(isinstance(r.message.id, str) and r.message.id for r in results)

    more = store.append([msg("b", "alice", "2"), msg("a", "alice", "3")])
    assert [(r.message.conv, r.message.seq) for r in more] == [("b", 3), ("a", 4)]
    assert store.get_conversation("a").last_seq == 4  # type: ignore[union-attr]
    assert store.get_conversation("b").last_seq == 3  # type: ignore[union-attr]
    assert {c.id: c.last_seq for c in store.list_conversations()} == {"a": 4, "b": 3}
    assert seqs(store.history("a")) == [1, 2, 3, 4]
    assert store.append([]) == []


def test_duplicates_return_the_original(store: Store) -> None:
    seed(store)
    first = store.append([msg("general", "alice", "c1", body="original"), msg("general", "alice", "c2")])
    again = store.append(
        [
            msg("general", "alice", "c3", body="new"),
            msg("general", "alice", "c1", body="resent, different body"),
            msg("general", "alice", "c3", body="repeat inside batch"),
            msg("general", "alice", "c4"),
        ]
    )
    assert [(r.message.seq, r.duplicate) for r in again] == [(3, False), (1, True), (3, True), (4, False)]
    assert again[1].message == first[0].message  # the original, body and id included
    assert again[2].message == again[0].message and again[2].message.body == "new"
    history = store.history("general")
    assert seqs(history) == [1, 2, 3, 4]
    assert [m.body for m in history.messages][:1] == ["original"]
    assert store.get_conversation("general").last_seq == 4  # type: ignore[union-attr]

    only_dups = store.append([msg("general", "alice", "c2"), msg("general", "alice", "c2")])
    assert [(r.message.seq, r.duplicate) for r in only_dups] == [(2, True), (2, True)]
    assert store.get_conversation("general").last_seq == 4  # type: ignore[union-attr]
    assert seqs(store.history("general")) == [1, 2, 3, 4]


def test_same_client_id_elsewhere_is_not_a_duplicate(store: Store) -> None:
    seed(store, convs=("a", "b"))
    results = store.append([msg("a", "alice", "same"), msg("a", "bob", "same"), msg("b", "alice", "same")])
    assert [(r.message.conv, r.message.seq, r.duplicate) for r in results] == [
        ("a", 1, False), ("a", 2, False), ("b", 1, False),
    ]
    later = store.append([msg("b", "bob", "same")])
    assert (later[0].message.seq, later[0].duplicate) == (2, False)


def test_unknown_conversation_stores_nothing(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "before")])
    with pytest.raises(NotFound, match="nope"):
        store.append([msg("general", "alice", "c1"), msg("nope", "alice", "c2"), msg("general", "bob", "c3")])
    assert seqs(store.history("general")) == [1]
    assert store.get_conversation("general").last_seq == 1  # type: ignore[union-attr]
    # the rejected client ids were not remembered either: sending them again stores them
    retry = store.append([msg("general", "alice", "c1")])
    assert (retry[0].message.seq, retry[0].duplicate) == (2, False)


def test_unserializable_attachment_stores_nothing(store: Store) -> None:
    seed(store)
    with pytest.raises(ValueError):
        store.append([msg("general", "alice", "ok"), msg("general", "alice", "bad", attachments=({"x": {1, 2}},))])
    assert store.history("general").messages == []
    assert store.get_conversation("general").last_seq == 0  # type: ignore[union-attr]


def test_unicode_and_attachments_round_trip(store: Store) -> None:
    seed(store)
    attachments = (
        {"type": "image", "url": "https://cdn.example/ü.png", "size": 12345, "meta": {"w": 1.5, "tags": ["a", "b"]}},
        {"type": "file", "name": "日本語.txt", "nullable": None, "ok": True},
    )
    body = "héllo 👋 Привет 你好 \u0000 \n tab\t\"quotes\" 'single' \\ end"
    result = store.append([msg("general", "alice", "ü-1", body=body, attachments=attachments),
                           msg("general", "bob", "plain", body="")])
    page = store.history("general")
    assert page.messages == [r.message for r in result]
    stored = page.messages[0]
    assert stored.body == body and stored.client_msg_id == "ü-1"
    assert [dict(a) for a in stored.attachments] == [dict(a) for a in attachments]
    assert page.messages[1].attachments == () and page.messages[1].body == ""
    assert stored.to_payload()["attachments"][1]["name"] == "日本語.txt"


# --- history ----------------------------------------------------------------------------------


def test_history_bounds(store: Store) -> None:
    seed(store, convs=("general", "other"))
    fill(store, "general", 10)
    fill(store, "other", 3)

    def page(**kwargs: int) -> tuple[list[int], bool]:
        result = store.history("general", **kwargs)
        return seqs(result), result.has_more

    assert page() == (list(range(1, 11)), False)
    assert page(limit=3) == ([8, 9, 10], True)
    assert page(limit=10) == (list(range(1, 11)), False)
    assert page(limit=11) == (list(range(1, 11)), False)
    assert page(limit=1) == ([10], True)
    assert page(before=4, limit=2) == ([2, 3], True)
    assert page(before=3, limit=2) == ([1, 2], False)
    assert page(before=2, limit=5) == ([1], False)
    assert page(before=1) == ([], False)
    assert page(before=100, limit=2) == ([9, 10], True)
    assert page(after=7, limit=2) == ([8, 9], True)
    assert page(after=8, limit=2) == ([9, 10], False)
    assert page(after=0, limit=3) == ([1, 2, 3], True)
    assert page(after=10) == ([], False)
    assert page(after=2, before=9, limit=3) == ([3, 4, 5], True)
    assert page(after=2, before=6, limit=3) == ([3, 4, 5], False)
    assert page(after=2, before=6, limit=50) == ([3, 4, 5], False)
    assert page(after=5, before=6) == ([], False)
    assert page(after=6, before=3) == ([], False)
    # Bounds past the largest seq a store holds select what they mean, never overflow.
    assert page(before=2**63, limit=2) == ([9, 10], True)
    assert page(before=2**70, after=8) == ([9, 10], False)
    assert page(after=2**63 - 1) == ([], False)
    assert page(after=2**64) == ([], False)
    assert all(m.conv == "general" for m in store.history("general").messages)
    assert seqs(store.history("other")) == [1, 2, 3]
    assert store.history("nope") == HistoryPage(messages=[], has_more=False)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            store.history("general", limit=bad)


@pytest.mark.parametrize("page_size", [1, 4, 23, 50])
def test_walking_the_log_sees_every_seq_once(store: Store, page_size: int) -> None:
    seed(store, convs=("general", "noise"))
    for start in range(0, 23, 7):  # several batches, interleaved with another conversation
        store.append([msg("general", "alice", f"g{i}") for i in range(start, min(start + 7, 23))]
                     + [msg("noise", "bob", f"n{start}")])

    backwards: list[int] = []
    result = store.history("general", limit=page_size)
    while True:
        backwards = seqs(result) + backwards
        if not result.has_more:
            break
        result = store.history("general", before=result.messages[0].seq, limit=page_size)
    assert backwards == list(range(1, 24))

    forwards: list[int] = []
    cursor = 0
    while True:
        result = store.history("general", after=cursor, limit=page_size)
        forwards += seqs(result)
        if not result.has_more:
            break
        cursor = result.messages[-1].seq
    assert forwards == list(range(1, 24))


def test_ping(store: Store) -> None:
    store.ping()
