"""An in-memory view of conversation memberships, refreshed when the store says they changed.

The broker checks access on every publish and every delivery; asking the database each time would
put a round trip on the hot path. Instead the view polls ``store.membership_version()`` (one cheap
query) and reloads when it moves, so an admin change made by any process is seen within one
refresh interval (0.5 s by default) without a restart.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from chatcore.access import Membership
from chatcore.store.base import Store


class MembershipView(Membership):
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._version: int | None = None
        self._members: dict[str, frozenset[str]] = {}
        self._convs_of: dict[str, frozenset[str]] = {}

    def refresh(self) -> bool:
        """Reload if the store's membership version moved. Blocking; returns True if reloaded."""
        version = self._store.membership_version()
        if version == self._version:
            return False
        members = self._store.memberships()
        convs_of: defaultdict[str, set[str]] = defaultdict(set)
        for conv, users in members.items():
            for user in users:
                convs_of[user].add(conv)
        with self._lock:
            self._members = members
            self._convs_of = {user: frozenset(convs) for user, convs in convs_of.items()}
            self._version = version
        return True

    @property
    def version(self) -> int | None:
        """Changes whenever the view reloads: answers derived from the view may be cached per version."""
        return self._version

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
