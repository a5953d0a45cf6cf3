"""A recording proxy for the MongoStore's pymongo collections: every query, update, insert, count
and aggregate is checked against the shard keys of chatmq/core/store/mongo_layout.py as it happens.

On a sharded cluster a query that does not name the shard key goes to every shard (scatter-gather)
and an upsert without it is refused, so the message log must never do either. The proxy knows the
collection methods the store may call and refuses any other, so a new kind of query cannot slip
past the check unexamined.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from chatmq.core.store.mongo import MongoStore
from chatmq.core.store.mongo_layout import SHARD_KEYS, UNSHARDED

ROUTING = {key.collection: key.routing_fields for key in SHARD_KEYS}

# Store methods that read a whole sharded collection on purpose (admin listings, the membership
# view, one conversation's read receipts). Never the message log.
SCATTER_ALLOWED = {
    ("users", "list_users"),
    ("users", "count_users"),
    ("conversations", "count_conversations"),
    ("conversations", "list_conversations"),
    ("conversations", "memberships"),
    ("markers", "markers"),
    # a search first finds the user's conversations on the members index (as a conversation list
    # does), then queries the message log of exactly those
    ("conversations", "search"),
    ("push_targets", "put_push_target"),  # a token changing hands: rare, and it must have one owner
    ("push_targets", "delete_push_tokens"),  # tokens the provider declared dead
    # An operator's erasure of a user or deletion of a conversation: rare, and complete.
    ("conversations", "forget_user"),  # the conversations the user is a member of
    ("mutes", "forget_user"),
    ("markers", "delete_conversation"),
}

_FILTERED = {
    "find", "find_one", "find_one_and_update", "find_one_and_replace", "find_one_and_delete",
    "update_one", "update_many", "replace_one", "delete_one", "delete_many", "count_documents", "distinct",
}
_PASSTHROUGH = {"name", "full_name", "database", "write_concern", "read_preference", "read_concern",
                "create_index", "list_indexes", "index_information"}
_STORE_ATTRIBUTES = ("_users", "_convs", "_messages", "_meta", "_markers", "_events", "_history", "_membership_log",
                     "_reactions", "_media_refs", "_outbox", "_push_targets", "_mutes", "_deliveries",
                     "_webhooks")


@dataclass
class QueryLog:
    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)  # (collection, op, store method, filter)
    violations: list[str] = field(default_factory=list)

    def targeted(self, collection: str) -> list[tuple[str, str, Any]]:
        return [(op, method, spec) for coll, op, method, spec in self.calls if coll == collection]


def _routes(spec: Any, fields: tuple[str, ...]) -> bool:
    """True when the filter pins every routing field to one value or a list of values."""
    if not isinstance(spec, dict):
        return False
    for name in fields:
        value = spec.get(name)
        if value is None:
            return False
        if isinstance(value, dict) and set(value) != {"$in"}:
            return False
    return True


def _calling_store_method() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), MongoStore):
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "<outside the store>"


class SpyCollection:
    def __init__(self, inner: Any, log: QueryLog) -> None:
        self._inner = inner
        self._log = log
        if inner.name not in ROUTING and inner.name not in UNSHARDED:
            log.violations.append(f"{inner.name}: a collection mongo_layout.py does not know")

    def _check(self, op: str, spec: Any, method: str) -> None:
        name = self._inner.name
        self._log.calls.append((name, op, method, spec))
        fields = ROUTING.get(name)
        if fields is None or (name, method) in SCATTER_ALLOWED:
            return
        if op in ("insert_one", "insert_many"):
            docs = spec if isinstance(spec, list) else [spec]
            if not all(all(f in doc for f in fields) for doc in docs):
                self._log.violations.append(f"{method}: {op} into {name} without shard key {fields}")
        elif not _routes(spec, fields):
            self._log.violations.append(f"{method}: {op} on {name} without shard key {fields}: {spec!r}")

    def __getattr__(self, attr: str) -> Any:
        inner = self._inner
        if attr in _PASSTHROUGH:
            return getattr(inner, attr)
        if attr == "with_options":
            return lambda **kw: SpyCollection(inner.with_options(**kw), self._log)
        if attr in _FILTERED:
            def filtered(spec: Any = None, *args: Any, **kwargs: Any) -> Any:
                self._check(attr, spec, _calling_store_method())
                return getattr(inner, attr)(spec, *args, **kwargs) if spec is not None else getattr(inner, attr)()
            return filtered
        if attr in ("insert_one", "insert_many"):
            def insert(docs: Any, *args: Any, **kwargs: Any) -> Any:
                self._check(attr, docs, _calling_store_method())
                return getattr(inner, attr)(docs, *args, **kwargs)
            return insert
        if attr == "aggregate":
            def aggregate(pipeline: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
                first = pipeline[0] if pipeline else {}
                self._check(attr, first.get("$match"), _calling_store_method())
                return inner.aggregate(pipeline, *args, **kwargs)
            return aggregate
        raise AttributeError(f"SpyCollection does not check {attr!r} yet: teach tests/store/shardspy.py")


def spy_on(store: MongoStore) -> QueryLog:
    """Wrap every collection the store queries; returns the log the checks write to."""
    log = QueryLog()
    for attribute in _STORE_ATTRIBUTES:
        setattr(store, attribute, SpyCollection(getattr(store, attribute), log))
    return log
