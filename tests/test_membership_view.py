"""The in-memory membership view follows the store change by change, and reloads whole only when
the store's change log cannot cover the gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmq.core.membership import MembershipView
from chatmq.core.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(30)


class CountingStore(SQLiteStore):
    full_loads = 0

    def memberships(self) -> dict[str, frozenset[str]]:
        self.full_loads += 1
        return super().memberships()


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(str(tmp_path / "chatmq.db"))
    for user in ("alice", "bob", "carol", "dave"):
        store.create_user(user, "h")
    store.create_conversation("general", ["alice", "bob"])
    store.create_conversation("random", ["bob", "carol"])
    return store


def same_as_a_fresh_view(view: MembershipView, store: SQLiteStore) -> None:
    fresh = MembershipView(store)
    fresh.refresh()
    assert view._members == fresh._members
    assert view._convs_of == fresh._convs_of
    assert view.version == fresh.version == store.membership_version()


def test_the_view_follows_changes_without_reloading_everything(store: CountingStore) -> None:
    view = MembershipView(store)
    assert view.refresh() and store.full_loads == 1  # the first load reads everything
    assert not view.refresh()  # nothing moved

    store.add_member("general", "carol")
    store.remove_member("random", "bob")
    store.create_conversation("solo", ["dave"])
    assert view.refresh()
    assert store.full_loads == 1  # caught up from the change log alone
    assert view.is_member("general", "carol") and not view.is_member("random", "bob")
    assert view.conversations_of("bob") == {"general"}
    assert view.conversations_of("carol") == {"general", "random"}
    assert view.exists("solo") and view.shares_conversation("alice", "carol")
    assert not view.shares_conversation("dave", "alice")

    store.remove_member("solo", "dave")  # a user who leaves their last conversation
    assert view.refresh() and view.conversations_of("dave") == frozenset()
    assert "dave" not in view._convs_of
    assert store.full_loads == 1
    store.full_loads = 0
    same_as_a_fresh_view(view, store)


def test_a_gap_in_the_change_log_means_a_full_reload(store: CountingStore) -> None:
    view = MembershipView(store)
    view.refresh()
    store.add_member("general", "dave")
    store.add_member("random", "dave")
    with store._connection() as conn:  # as if pruned, or a database written before the log existed
        conn.execute("DELETE FROM membership_log WHERE version = ?", (store.membership_version() - 1,))
    assert view.refresh()
    assert store.full_loads == 2
    assert view.conversations_of("dave") == {"general", "random"}
    same_as_a_fresh_view(view, store)


def test_a_slower_thread_cannot_roll_the_view_back(store: CountingStore) -> None:
    view = MembershipView(store)
    view.refresh()
    before = view.version
    assert before is not None
    store.add_member("general", "carol")
    stale = store.membership_changes(before)  # fetched, then delayed while another thread catches up
    store.add_member("general", "dave")
    assert view.refresh()
    assert stale is not None
    view._apply(stale)
    assert view.is_member("general", "dave") and view.version == store.membership_version()


def test_refresh_losses_names_who_may_have_lost_access(store: CountingStore) -> None:
    """The RabbitMQ session guard checks only these users' queues (chatmq.adapters.rabbitmq.sessions)."""
    store.create_conversation("team", ["alice", "bob", "carol", "dave"])
    view = MembershipView(store)
    assert view.refresh_losses() is None  # read whole: anyone may have lost something
    assert view.refresh_losses() == set()
    store.add_member("general", "dave")
    assert view.refresh_losses() == set()  # gains only
    store.remove_member("team", "dave")  # dave still shares general with alice and bob, nothing with carol
    assert view.refresh_losses() == {"dave", "carol"}
    store.remove_member("team", "alice")  # alice still shares general with bob and dave, nothing with carol
    store.remove_member("random", "carol")  # carol shares team with bob: no presence lost beside hers
    assert view.refresh_losses() == {"alice", "carol"}
    store.create_conversation("pair", ["bob", "dave"])
    store.remove_member("general", "bob")
    store.remove_member("general", "dave")
    assert view.refresh_losses() == {"bob", "dave", "alice"}  # alice shares nothing with either any more
    same_as_a_fresh_view(view, store)
