"""The Store contract for what provisioning needs: profiles, bulk creation, paged listings."""

from __future__ import annotations

import pytest

from chatmq.core.store.base import AlreadyExists, NewUser, NotFound, Store

pytestmark = pytest.mark.timeout(30)


def test_profile_fields_are_stored_and_changed(store: Store) -> None:
    made = store.create_user("alice", "h", display_name="Alice Liddell", avatar="m1")
    assert made.display_name == "Alice Liddell" and made.avatar == "m1"
    assert store.get_user("alice") == made
    store.set_profile("alice", "Alice L.", None)
    user = store.get_user("alice")
    assert user is not None and user.display_name == "Alice L." and user.avatar is None
    assert user.password_hash == "h" and not user.disabled
    with pytest.raises(NotFound):
        store.set_profile("ghost", "x", None)
    plain = store.create_user("bob", "")
    assert plain.display_name is None and plain.avatar is None and plain.password_hash == ""


def test_bulk_create_is_idempotent_and_reports_each_row(store: Store) -> None:
    store.create_user("carol", "old", display_name="Carol")
    version = store.users_version()
    rows = [NewUser("alice", "h1", "Alice"), NewUser("carol", "new", "Other"), NewUser("bob"),
            NewUser("alice", "h2")]
    assert store.create_users(rows) == [True, False, True, False]
    assert store.users_version() != version
    carol = store.get_user("carol")
    assert carol is not None and carol.password_hash == "old" and carol.display_name == "Carol"  # untouched
    alice = store.get_user("alice")
    assert alice is not None and alice.password_hash == "h1" and alice.display_name == "Alice" and alice.created_at
    bob = store.get_user("bob")
    assert bob is not None and bob.password_hash == "" and bob.display_name is None

    version = store.users_version()
    assert store.create_users(rows) == [False, False, False, False]
    assert store.users_version() == version  # nothing new, nothing for the user mirrors to reread
    assert store.create_users([]) == []
    with pytest.raises(AlreadyExists):
        store.create_user("bob", "h")


def test_bulk_create_validates_every_id_before_writing(store: Store) -> None:
    with pytest.raises(ValueError):
        store.create_users([NewUser("fine"), NewUser("not/fine")])
    assert store.get_user("fine") is None


def test_users_page_by_id(store: Store) -> None:
    ids = [f"u{n:03d}" for n in range(25)]
    store.create_users([NewUser(user_id) for user_id in reversed(ids)])
    assert store.count_users() == 25
    seen: list[str] = []
    after = None
    while True:
        page = store.list_users(after=after, limit=10)
        seen += [u.id for u in page]
        if len(page) < 10:
            break
        after = page[-1].id
    assert seen == ids
    assert [u.id for u in store.list_users(after="u020")] == ids[21:]
    assert [u.id for u in store.list_users()] == ids
    assert [u.id for u in store.get_users(["u003", "ghost", "u001", "u003"])] == ["u001", "u003"]
    assert store.get_users([]) == []


def test_conversations_page_by_id(store: Store) -> None:
    store.create_users([NewUser("alice"), NewUser("bob")])
    for n in range(7):
        store.create_conversation(f"c{n}", ["alice"] if n % 2 else ["alice", "bob"])
    assert store.count_conversations() == 7
    first = store.list_conversations(limit=3)
    assert [c.id for c in first] == ["c0", "c1", "c2"] and first[0].members == ("alice", "bob")
    assert [c.id for c in store.list_conversations(after="c2", limit=3)] == ["c3", "c4", "c5"]
    assert [c.id for c in store.list_conversations(member="bob", after="c0")] == ["c2", "c4", "c6"]
    assert [c.members for c in store.list_conversations(member="bob", limit=1)] == [("alice", "bob")]
