"""An in-memory view of conversation memberships, refreshed when the store says they changed.

The broker checks access on every publish and every delivery; asking the database each time would
put a round trip on the hot path. Instead the view polls ``store.membership_version()`` (one cheap
query) and catches up when it moves, so an admin change made by any process is seen within one
refresh interval (0.5 s by default) without a restart.

Catching up reads only the conversations that changed (``store.membership_changes``): reloading
every membership on every change took 1 s at 100,000 conversations and 11 to 20 s at 1,000,000, in
every bridge, API and broker process. The whole set is read at start, and again only when the
store's change log cannot cover the gap (a view more than 10,000 changes behind).
"""

from __future__ import annotations

import threading
from collections import defaultdict

from chatmq.core.access import Membership
from chatmq.core.store.base import MembershipChanges, Store


class MembershipView(Membership):
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._version: int | None = None
        self._members: dict[str, frozenset[str]] = {}
        self._convs_of: dict[str, frozenset[str]] = {}

    def refresh(self) -> bool:
        """Catch up if the store's membership version moved. Blocking; returns True if it moved."""
        version = self._store.membership_version()
        if version == self._version:
            return False
        changes = None if self._version is None else self._store.membership_changes(self._version)
        if changes is not None:
            self._apply(changes)
            return True
        self._reload(version)
        return True

    def refresh_losses(self) -> set[str] | None:
        """Catch up like ``refresh`` and say who may have lost access by it: every user removed
        from a conversation (or whose conversation is gone), and every former fellow member who
        shares no conversation with such a user any more (their presence is no longer each
        other's). Empty when nothing changed; None when the view was read whole (then anyone may
        have lost something). For one caller at a time (the RabbitMQ session guard)."""
        version = self._store.membership_version()
        if version == self._version:
            return set()
        changes = None if self._version is None else self._store.membership_changes(self._version)
        if changes is None:
            self._reload(version)
            return None
        before = {conv: self.members(conv) for conv in changes.members}
        self._apply(changes)
        losers: set[str] = set()
        for conv, was in before.items():
            gone = was - self.members(conv)
            losers |= gone
            for user in gone:
                losers.update(peer for peer in was - losers if not self.shares_conversation(user, peer))
        return losers

    def _apply(self, changes: MembershipChanges) -> None:
        """Readers look up without the lock: each dict entry is replaced whole, never mutated."""
        with self._lock:
            if self._version is not None and changes.version <= self._version:
                return  # another thread caught up further meanwhile
            for conv, now in changes.members.items():
                before = self._members.get(conv, frozenset())
                if now is None:
                    self._members.pop(conv, None)
                    now = frozenset()
                else:
                    self._members[conv] = now
                for user in before - now:
                    left = self._convs_of.get(user, frozenset()) - {conv}
                    if left:
                        self._convs_of[user] = left
                    else:
                        self._convs_of.pop(user, None)
                for user in now - before:
                    self._convs_of[user] = self._convs_of.get(user, frozenset()) | {conv}
            self._version = changes.version

    def _reload(self, version: int) -> None:
        members = self._store.memberships()
        convs_of: defaultdict[str, set[str]] = defaultdict(set)
        for conv, users in members.items():
            for user in users:
                convs_of[user].add(conv)
        with self._lock:
            if self._version is not None and version < self._version:
                return  # another thread caught up further meanwhile
            self._members = members
            self._convs_of = {user: frozenset(convs) for user, convs in convs_of.items()}
            self._version = version

    @property
    def version(self) -> int | None:
        """Changes whenever the view changes: answers derived from the view may be cached per version."""
        return self._version

    def snapshot(self) -> dict[str, frozenset[str]]:
        """Every conversation's members, as ``Store.memberships()`` returns them (a copy)."""
        with self._lock:
            return dict(self._members)

    def exists(self, conv: str) -> bool:
        return conv in self._members

    def members(self, conv: str) -> frozenset[str]:
        return self._members.get(conv, frozenset())

    def is_member(self, conv: str, user: str) -> bool:
        return user in self._members.get(conv, ())

    def conversations_of(self, user: str) -> frozenset[str]:
        return self._convs_of.get(user, frozenset())

    def shares_conversation(self, user: str, other: str) -> bool:
        mine = self._convs_of.get(user)
        theirs = self._convs_of.get(other)
        return bool(mine and theirs and not mine.isdisjoint(theirs))
