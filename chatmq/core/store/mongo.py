"""The production store on MongoDB: users, conversations (members array + ``last_seq`` counter),
messages and a small ``meta`` collection, one collection per kind.

Seqs: for each conversation in a batch the store reserves a contiguous range with one atomic
``$inc`` on the conversation's ``last_seq`` and then inserts the messages (``ordered=True``, journaled
majority write concern), so concurrent writers never share a seq and an ack means durable. Every
message query carries ``conv``, the shard key; both unique indexes are prefixed by it
(chatmq/core/store/mongo_layout.py holds the indexes and shard keys, docs/mongodb-sharding.md why).

Reads and writes: writes use journaled majority write concern; a URL may add to it (``wtimeoutMS``)
or lower it, never to w=0 (an ack must mean stored). Everything that decides something (duplicate
checks, the seq counter, memberships, receipts) reads the primary. Only history reads (``history``,
``count_unread``) follow the URL's ``readPreference``/``maxStalenessSeconds`` (default primary),
always with majority read concern, so a page never shows a message a failover could roll back.

Holes: MongoDB (without multi-document transactions, which a standalone server lacks) cannot make
"reserve the range" and "insert the messages" one atomic step. If the process dies, or the insert
fails, after the ``$inc`` and before the insert, those reserved seqs are never used (the messages
were never acked: their senders resend and get fresh seqs). The next reservation fills such a hole:
unless this store itself stored everything up to its new range, it looks up the highest stored seq
below the range and stores a tombstone at every seq between (``hole_tombstone``: sent by
``@bridge``, erased, no body), so the log stays gapless for readers and clients. A seq lost to a
race for the same client id is filled at once the same way. A write still under way in another
process (only possible when two writers share a conversation) then meets its seq taken and fails
unacked, its senders resend. In steady state (one writer per conversation) the check costs nothing:
the store remembers what it stored.

Membership changes are written before the membership version is bumped (two writes, no
transaction), so a poller that sees the new version always reads the new memberships. The change's
event (the outbox the bridge publishes from) is written between the two; a crash right after the
change loses that one event, the only place the outbox is not atomic with the change here.

Markers live in ``markers``, one document per (conv, user) with ``$max`` updates, so a marker can
only move forward even with concurrent writers.

Changes (edits, deletions, reactions) are entries of the log like messages; their effect is kept
on the message document (latest text, deletion) and in ``reactions`` (one document per message,
emoji and member), which ``message_view`` reads. Without a transaction the entry is inserted first
and its state written after it, every step idempotent and ordered by seq (a later edit, reaction or
deletion is never undone by an earlier one). A crash in between leaves an entry whose message does
not show it yet, and nothing acked: the broker redelivers the send and its duplicate applies the
change again. Until then a change checked against that message sees its older state.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import orjson
from pymongo import ASCENDING, DESCENDING, ReadPreference, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.mongo_client import MongoClient
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from chatmq.core.ids import require_id
from chatmq.core.protocol import CHANGE_KINDS, EntryKind
from chatmq.core.search import SearchQuery, decode_cursor, encode_cursor, terms
from chatmq.core.store.base import (
    DELIVERED,
    DELIVERY_CANCELLED,
    DELIVERY_PENDING,
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    EVENT_TITLE_CHANGED,
    MEMBERSHIP_LOG_KEEP,
    MEMBERSHIP_LOG_PRUNE_EVERY,
    OUTBOX_EVENT,
    OUTBOX_MESSAGE,
    OUTBOX_READ,
    AlreadyExists,
    AppendResult,
    Attempt,
    Change,
    Conversation,
    ConversationEvent,
    Delivery,
    DispatchBatch,
    Erased,
    HistoryPage,
    LogEntry,
    Marker,
    MembershipChanges,
    Message,
    MessageView,
    Mute,
    NewMessage,
    NewUser,
    NotFound,
    OutboxEntry,
    PushTarget,
    ReceiptOutcome,
    ReceiptResult,
    ReceiptUpdate,
    RestoreConflict,
    SearchPage,
    Store,
    TargetState,
    User,
    ViewPage,
    Webhook,
    encode_attachments,
    event_document,
    event_from_document,
    fold_reactions,
    hole_tombstone,
    new_message_id,
    now_ms,
    refusal_of,
    require_same_entry,
    restored_conv,
    seq_bound,
)
from chatmq.core.store.mongo_layout import INDEXES

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "chatmq"
DURABLE = WriteConcern(w="majority", j=True)
_MEMBERSHIP_VERSION = "membership_version"
_USERS_VERSION = "users_version"
_EVENT_ID = "event_id"
_OUTBOX_ID = "outbox_id"
_DELIVERY_N = "delivery_n"
_DUPLICATE_KEY = 11000
_NEWEST_FIRST = [("ts", DESCENDING), ("conv", DESCENDING), ("seq", DESCENDING)]  # search results
_STATE_FIELDS = {"kind": 1, "sender": 1, "ts": 1, "delete_seq": 1}


class MongoStore(Store):
    def __init__(
        self,
        db: Database[Any],
        write_concern: WriteConcern | None = None,
        history_read_preference: _ServerMode | None = None,
    ) -> None:
        self._db = db
        concern = write_concern or DURABLE

        def collection(name: str) -> Collection[Any]:
            return db.get_collection(name).with_options(
                write_concern=concern, read_preference=ReadPreference.PRIMARY
            )

        self._users = collection("users")
        self._convs = collection("conversations")
        self._messages = collection("messages")
        self._meta = collection("meta")
        self._markers = collection("markers")
        self._events = collection("events")
        self._membership_log = collection("membership_log")
        self._reactions = collection("reactions")
        self._media_refs = collection("media_refs")
        self._outbox = collection("outbox")
        self._push_targets = collection("push_targets")
        self._mutes = collection("mutes")
        self._deliveries = collection("deliveries")
        self._webhooks = collection("webhooks")
        self._stored_upto: dict[str, int] = {}  # conv -> every seq up to this one is stored (by us)
        # History pages may come from a secondary if so configured, but only majority-committed.
        self._history: Collection[Any] = self._messages.with_options(
            read_preference=history_read_preference or ReadPreference.PRIMARY,
            read_concern=ReadConcern("majority"),
        )
        for index in (spec for spec in INDEXES if spec.built_by_store):
            db.get_collection(index.collection).create_index(
                list(index.keys), name=index.name, unique=index.unique
            )

    @classmethod
    def from_url(cls, url: str) -> MongoStore:
        """The database comes from the URL path (default "chatmq"). Write concern options in the
        URL (``w``, ``journal``, ``wtimeoutMS``) are laid over the journaled-majority default;
        ``readPreference``/``maxStalenessSeconds`` apply to history reads only."""
        client: MongoClient[Any] = MongoClient(url)
        try:
            concern = durable_write_concern(client.write_concern)
            db = client.get_default_database(default=DEFAULT_DATABASE)
            return cls(db, write_concern=concern, history_read_preference=client.read_preference)
        except BaseException:  # unreachable server or bad credentials: do not leak the client's threads
            client.close()
            raise

    @classmethod
    def mongomock(cls, name: str = DEFAULT_DATABASE) -> MongoStore:
        """An in-process fake for tests; mongomock is a test-only dependency, hence the lazy import."""
        import mongomock

        return cls(mongomock.MongoClient().get_database(name))

    # --- users ------------------------------------------------------------------------------
    def create_user(
        self, user_id: str, password_hash: str, *, display_name: str | None = None, avatar: str | None = None
    ) -> User:
        require_id(user_id, "user id")
        user = User(id=user_id, password_hash=password_hash, disabled=False, created_at=now_ms(),
                    display_name=display_name, avatar=avatar)
        try:
            self._users.insert_one(_user_doc(user))
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"user {user_id!r} already exists") from exc
        self._bump_users()
        return user

    def create_users(self, users: Sequence[NewUser]) -> list[bool]:
        for new in users:
            require_id(new.id, "user id")
        created_at = now_ms()
        created = [False] * len(users)
        first: dict[str, int] = {}
        for index, new in enumerate(users):
            first.setdefault(new.id, index)
        docs = [
            _user_doc(User(id=new.id, password_hash=new.password_hash, created_at=created_at,
                           display_name=new.display_name, avatar=new.avatar))
            for index, new in enumerate(users) if first[new.id] == index
        ]
        inserted: set[str] = {doc["_id"] for doc in docs}
        if docs:
            try:  # unordered: every new id is inserted even when some already exist
                self._users.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                failed = [error for error in exc.details.get("writeErrors", [])]
                if any(error.get("code") != _DUPLICATE_KEY for error in failed):
                    raise
                inserted -= {docs[error["index"]]["_id"] for error in failed}
        for user_id in inserted:
            created[first[user_id]] = True
        if inserted:
            self._bump_users()
        return created

    def get_user(self, user_id: str) -> User | None:
        doc = self._users.find_one({"_id": user_id})
        return _user(doc) if doc else None

    def get_users(self, user_ids: Sequence[str]) -> list[User]:
        docs = self._users.find({"_id": {"$in": sorted(set(user_ids))}}).sort("_id", ASCENDING)
        return [_user(doc) for doc in docs]

    def list_users(self, *, after: str | None = None, limit: int | None = None) -> list[User]:
        cursor = self._users.find({"_id": {"$gt": after}} if after else {}).sort("_id", ASCENDING)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [_user(doc) for doc in cursor]

    def count_users(self) -> int:
        return int(self._users.count_documents({}))

    def set_profile(self, user_id: str, display_name: str | None, avatar: str | None) -> None:
        fields = {"display_name": display_name, "avatar": avatar}
        if self._users.update_one({"_id": user_id}, {"$set": fields}).matched_count == 0:
            raise NotFound(f"no user {user_id!r}")

    def set_password(self, user_id: str, password_hash: str) -> None:
        self._update_user(user_id, {"password_hash": password_hash})

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        self._update_user(user_id, {"disabled": bool(disabled)})

    def _update_user(self, user_id: str, fields: dict[str, Any]) -> None:
        if self._users.update_one({"_id": user_id}, {"$set": fields}).matched_count == 0:
            raise NotFound(f"no user {user_id!r}")
        self._bump_users()

    def users_version(self) -> int:
        doc = self._meta.find_one({"_id": _USERS_VERSION})
        return int(doc["value"]) if doc else 0

    def _bump_users(self) -> None:
        self._meta.update_one({"_id": _USERS_VERSION}, {"$inc": {"value": 1}}, upsert=True)

    # --- conversations ----------------------------------------------------------------------
    def create_conversation(
        self, conv_id: str, members: Sequence[str], title: str | None = None, owner: str | None = None
    ) -> Conversation:
        require_id(conv_id, "conversation id")
        known = {doc["_id"] for doc in self._users.find({"_id": {"$in": list(members)}}, {"_id": 1})}
        for user in members:
            if user not in known:
                raise NotFound(f"no user {user!r}")
        conv = Conversation(
            id=conv_id, members=tuple(sorted(set(members))), title=title, owner=owner, created_at=now_ms()
        )
        try:
            self._convs.insert_one(
                {
                    "_id": conv.id,
                    "members": list(conv.members),
                    "title": title,
                    "owner": owner,
                    "created_at": conv.created_at,
                    "last_seq": 0,
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"conversation {conv_id!r} already exists") from exc
        self._record_event(EVENT_CREATED, conv_id, None, title, conv.members, conv.created_at)
        self._bump_membership(conv_id)
        return conv

    def get_conversation(self, conv_id: str) -> Conversation | None:
        doc = self._convs.find_one({"_id": conv_id})
        return _conversation(doc) if doc else None

    def list_conversations(
        self, member: str | None = None, *, after: str | None = None, limit: int | None = None
    ) -> list[Conversation]:
        query: dict[str, Any] = {} if member is None else {"members": member}
        if after:
            query["_id"] = {"$gt": after}
        cursor = self._convs.find(query).sort("_id", ASCENDING)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [_conversation(doc) for doc in cursor]

    def count_conversations(self) -> int:
        return int(self._convs.count_documents({}))

    def add_member(self, conv_id: str, user_id: str) -> None:
        if self._users.find_one({"_id": user_id}, {"_id": 1}) is None:
            if self._convs.find_one({"_id": conv_id}, {"_id": 1}) is None:
                raise NotFound(f"no conversation {conv_id!r}")
            raise NotFound(f"no user {user_id!r}")
        result = self._convs.update_one({"_id": conv_id}, {"$addToSet": {"members": user_id}})
        if result.matched_count == 0:
            raise NotFound(f"no conversation {conv_id!r}")
        if result.modified_count:
            self._record_change(EVENT_MEMBER_ADDED, conv_id, user_id)
            self._bump_membership(conv_id)

    def remove_member(self, conv_id: str, user_id: str) -> None:
        result = self._convs.update_one({"_id": conv_id}, {"$pull": {"members": user_id}})
        if result.matched_count == 0:
            raise NotFound(f"no conversation {conv_id!r}")
        if result.modified_count:
            self._record_change(EVENT_MEMBER_REMOVED, conv_id, user_id)
            self._bump_membership(conv_id)

    def set_title(self, conv_id: str, title: str | None) -> None:
        if self._convs.update_one({"_id": conv_id}, {"$set": {"title": title}}).matched_count == 0:
            raise NotFound(f"no conversation {conv_id!r}")
        self._record_change(EVENT_TITLE_CHANGED, conv_id, None)

    def _record_change(self, kind: str, conv_id: str, subject: str | None) -> None:
        doc = self._convs.find_one({"_id": conv_id}, {"members": 1, "title": 1}) or {}
        recipients = sorted(doc.get("members", ()))
        if subject is not None and subject not in recipients:
            recipients.append(subject)
        self._record_event(kind, conv_id, subject, doc.get("title"), recipients, now_ms())

    def _record_event(
        self, kind: str, conv_id: str, subject: str | None, title: str | None, recipients: Sequence[str], ts: int
    ) -> None:
        counter = self._meta.find_one_and_update(
            {"_id": _EVENT_ID}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        event = ConversationEvent(int(counter["value"]), kind, conv_id, subject, title, tuple(recipients), ts)
        self._events.insert_one(
            {
                "_id": event.id, "kind": kind, "conv": conv_id, "subject": subject,
                "title": title, "recipients": list(recipients), "ts": ts,
            }
        )
        self._outbox.insert_one(
            {"_id": self._next_ids(_OUTBOX_ID, 1), "key": f"e:{event.id}", "kind": OUTBOX_EVENT, "conv": conv_id,
             "seq": 0, "user": subject, "event": event_document(event), "ts": ts}
        )  # fmt: skip

    def memberships(self) -> dict[str, frozenset[str]]:
        return {doc["_id"]: frozenset(doc.get("members", ())) for doc in self._convs.find({}, {"members": 1})}

    def membership_version(self) -> int:
        doc = self._meta.find_one({"_id": _MEMBERSHIP_VERSION})
        return int(doc["value"]) if doc else 0

    def membership_changes(self, since: int) -> MembershipChanges | None:
        version = self.membership_version()
        if version < since:
            return None
        logged = list(self._membership_log.find({"_id": {"$gt": since, "$lte": version}}).sort("_id", ASCENDING))
        if [doc["_id"] for doc in logged] != list(range(since + 1, version + 1)):
            return None  # pruned past ``since``, or a change between its version and its log entry
        convs = sorted({doc["conv"] for doc in logged})
        found = {
            doc["_id"]: frozenset(doc.get("members", ()))
            for doc in self._convs.find({"_id": {"$in": convs}}, {"members": 1})
        }
        return MembershipChanges(version, {conv: found.get(conv) for conv in convs})

    def _bump_membership(self, conv_id: str) -> None:
        """Next membership version, then its log entry. Not one transaction: a reader that sees the
        version before the entry finds a gap and reloads everything, which is still correct."""
        counter = self._meta.find_one_and_update(
            {"_id": _MEMBERSHIP_VERSION}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        version = int(counter["value"])
        self._membership_log.insert_one({"_id": version, "conv": conv_id})
        if version % MEMBERSHIP_LOG_PRUNE_EVERY == 0:
            self._membership_log.delete_many({"_id": {"$lte": version - MEMBERSHIP_LOG_KEEP}})

    # --- message log ------------------------------------------------------------------------
    def append(self, batch: Sequence[NewMessage], *, edit_window_ms: int = 0) -> list[AppendResult]:
        if not batch:
            return []
        # Reject what cannot be stored before writing anything; the JSON round trip also makes the
        # returned attachments look exactly like what history() reads back later.
        encoded = [encode_attachments(item.attachments) for item in batch]
        convs = list(dict.fromkeys(item.conv for item in batch))
        owners = {doc["_id"]: doc.get("owner") for doc in self._convs.find({"_id": {"$in": convs}}, {"owner": 1})}
        for conv in convs:
            if conv not in owners:
                raise NotFound(f"no conversation {conv!r}")

        # Plain messages go in runs (one counter $inc and one insert per conversation); a change or
        # a reply is checked against the log as it stands, so the run before it is stored first.
        results: list[AppendResult | None] = [None] * len(batch)
        run: list[int] = []
        for index, item in enumerate(batch):
            if item.kind in CHANGE_KINDS or item.reply_to is not None:
                self._append_run(batch, encoded, run, results)
                run = []
                results[index] = self._append_checked(item, encoded[index], owners[item.conv], edit_window_ms)
                self._record_outbox([results[index]])
            else:
                run.append(index)
        self._append_run(batch, encoded, run, results)
        return [result for result in results if result is not None]

    def _append_run(
        self, batch: Sequence[NewMessage], encoded: list[str | None], run: list[int],
        results: list[AppendResult | None],
    ) -> None:  # fmt: skip
        """Store the plain messages at ``run`` (indexes into ``batch``), filling their results."""
        if not run:
            return
        stored = self._stored_originals([batch[i] for i in run])
        first_of: dict[tuple[str, str, str], int] = {}  # key -> index of its first new occurrence
        fresh: defaultdict[str, list[int]] = defaultdict(list)  # conv -> indexes needing a seq
        for index in run:
            item = batch[index]
            key = (item.conv, item.sender, item.client_msg_id)
            if key in stored:
                original = stored[key]
                results[index] = AppendResult(original, duplicate=True, erased_media=self._reapply(original))
            elif key not in first_of:
                first_of[key] = index
                fresh[item.conv].append(index)

        docs: list[dict[str, Any]] = []
        for conv, indexes in fresh.items():
            first_seq = self._reserve(conv, len(indexes))
            for offset, index in enumerate(indexes):
                message = _new_entry(batch[index], first_seq + offset, encoded[index])
                results[index] = AppendResult(message=message, duplicate=False)
                docs.append(_message_doc(message))
        for raced in self._insert(docs):  # another writer stored the same client id first
            index = first_of[raced.key]
            results[index] = AppendResult(message=raced.original, duplicate=True)
        self._note_stored(docs)
        self._add_media_refs([r.message for r in (results[i] for i in run) if r and r.message and not r.duplicate])
        self._record_outbox([results[i] for i in run])

        for index in run:  # later repeats inside the run resolve to the first
            if results[index] is None:
                item = batch[index]
                first = results[first_of[(item.conv, item.sender, item.client_msg_id)]]
                assert first is not None
                results[index] = AppendResult(message=first.message, duplicate=True)

    def _append_checked(
        self, item: NewMessage, attachments: str | None, owner: str | None, edit_window_ms: int
    ) -> AppendResult:
        """One change or reply: checked against the stored log, then stored and folded into state.
        Checked before its seq is reserved, so a refusal leaves no hole."""
        key = {"conv": item.conv, "sender": item.sender, "client_msg_id": item.client_msg_id}
        stored = self._messages.find_one(key)
        if stored is not None:
            original = _message(stored)
            return AppendResult(original, duplicate=True, erased_media=self._reapply(original))
        last_seq = int((self._convs.find_one({"_id": item.conv}, {"last_seq": 1}) or {}).get("last_seq", 0))
        refusal = refusal_of(item, self._target_state(item), last_seq, owner, edit_window_ms)
        if refusal is not None:
            return AppendResult(None, duplicate=False, refusal=refusal)
        message = _new_entry(item, self._reserve(item.conv, 1), attachments)
        docs = [_message_doc(message)]
        raced_entries = self._insert(docs)
        self._note_stored(docs)
        for raced in raced_entries:
            return AppendResult(raced.original, duplicate=True, erased_media=self._reapply(raced.original))
        self._add_media_refs([message])
        return AppendResult(message, duplicate=False, erased_media=self._apply_change(message))

    def _target_state(self, entry: NewMessage) -> TargetState | None:
        seq = entry.target if entry.kind in CHANGE_KINDS else entry.reply_to
        doc = self._messages.find_one({"conv": entry.conv, "seq": seq}, _STATE_FIELDS)
        if doc is None:
            return None
        mine: frozenset[str] = frozenset()
        if entry.kind in (EntryKind.REACT, EntryKind.UNREACT):
            mine = frozenset(r["emoji"] for r in self._reactions.find(
                {"conv": entry.conv, "seq": seq, "user": entry.sender, "active": True}, {"emoji": 1}
            ))
        return TargetState(doc.get("kind") or EntryKind.MESSAGE, doc["sender"], int(doc["ts"]),
                           "delete_seq" in doc, mine)

    # Folding changes into state. Without a multi-document transaction the entry is stored first
    # and its state written after it; every step is idempotent and ordered by seq (a later edit,
    # reaction or deletion is never undone by an earlier one), so a duplicate of a change applies it
    # again: the broker's redelivery of a send the bridge never acked repairs a crash in between.
    def _reapply(self, entry: Message) -> tuple[str, ...]:
        return self._apply_change(entry) if entry.kind in CHANGE_KINDS else ()

    def _apply_change(self, entry: Message) -> tuple[str, ...]:
        conv, target = entry.conv, entry.target
        if entry.kind == EntryKind.EDIT:
            before = self._messages.find_one_and_update(
                {"conv": conv, "seq": target}, {"$addToSet": {"edit_seqs": entry.seq}},
                {"delete_seq": 1, "edit_seq": 1},
            )
            if before is not None and "delete_seq" in before:  # deleted meanwhile: erase this edit too
                self._messages.update_one({"conv": conv, "seq": entry.seq}, {"$set": {"body": "", "erased": True}})
            else:
                self._messages.update_one(
                    {"conv": conv, "seq": target, "delete_seq": {"$exists": False},
                     "$or": [{"edit_seq": {"$exists": False}}, {"edit_seq": {"$lt": entry.seq}}]},
                    {"$set": {"cur_body": entry.body, "edit_seq": entry.seq, "edited_at": entry.ts,
                              "terms": terms(entry.body)}},
                )
        elif entry.kind in (EntryKind.REACT, EntryKind.UNREACT):
            react = entry.kind == EntryKind.REACT
            fields: dict[str, Any] = {"op_seq": entry.seq, "active": react}
            if react:  # joins the emoji's group, or starts one (at its own seq)
                group = self._reactions.find_one(
                    {"conv": conv, "seq": target, "emoji": entry.emoji, "active": True}, {"group_seq": 1}
                )
                fields["group_seq"] = int(group["group_seq"]) if group else entry.seq
            # The last operation by seq wins: an older one misses the op_seq filter and its upsert
            # collides with the newer document on the unique index.
            with contextlib.suppress(DuplicateKeyError):
                self._reactions.update_one(
                    {"conv": conv, "seq": target, "emoji": entry.emoji, "user": entry.sender,
                     "op_seq": {"$lt": entry.seq}},
                    {"$set": fields},
                    upsert=True,
                )
        elif entry.kind == EntryKind.DELETE:
            doc = self._messages.find_one({"conv": conv, "seq": target}) or {}
            return self._erase_message(conv, doc, Change(entry.seq, entry.sender, entry.ts))
        return ()

    def _erase_message(self, conv: str, doc: dict[str, Any], deletion: Change) -> tuple[str, ...]:
        """Make the stored message ``doc`` a tombstone (a deletion, or an operator's erasure); each
        step idempotent. Returns the media it attached."""
        if not doc:
            return ()
        seq = int(doc["seq"])
        if "delete_seq" in doc:
            erased = tuple(doc.get("erased_media") or ())
        else:
            erased = tuple(dict.fromkeys(_media_ids(doc.get("attachments") or ())))
        self._messages.update_one(
            {"conv": conv, "seq": seq},
            {"$set": {"body": "", "attachments": [], "erased": True, "delete_seq": deletion.seq,
                      "deleted_by": deletion.by, "deleted_at": deletion.ts, "erased_media": list(erased)},
             "$unset": {"cur_body": "", "edit_seq": "", "edited_at": "", "terms": ""}},
        )
        edits = [int(s) for s in doc.get("edit_seqs") or ()]
        if edits:
            self._messages.update_many({"conv": conv, "seq": {"$in": edits}}, {"$set": {"body": "", "erased": True}})
        self._reactions.delete_many({"conv": conv, "seq": seq})
        self._media_refs.delete_many({"conv": conv, "seq": seq})
        return erased

    def _add_media_refs(self, messages: Sequence[Message]) -> None:
        docs = [{"conv": m.conv, "media_id": media_id, "seq": m.seq}
                for m in messages for media_id in dict.fromkeys(_media_ids(m.attachments))]
        if not docs:
            return
        try:
            self._media_refs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:  # already there (a retried batch): fine; anything else is not
            if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    def _record_outbox(self, results: Sequence[AppendResult | None]) -> None:
        """The notifier's entries for the new entries, written after them and before the ack. Not
        one transaction with them (see the module doc): a crash in between leaves stored entries
        without outbox entries, but unacked, so the device resends; a resend that finds the entry
        stored (a duplicate) writes its outbox entry again if it is missing (``$setOnInsert``)."""
        fresh = [r.message for r in results if r is not None and r.message is not None and not r.duplicate]
        again = {r.message.id: r.message for r in results
                 if r is not None and r.message is not None and r.duplicate}  # fmt: skip
        if not fresh and not again:
            return
        first = self._next_ids(_OUTBOX_ID, len(fresh) + len(again))
        if fresh:
            self._outbox.insert_many(
                [_outbox_message_doc(first + i, m) for i, m in enumerate(fresh)], ordered=False
            )
        for i, message in enumerate(again.values(), start=first + len(fresh)):
            doc = _outbox_message_doc(i, message)
            self._outbox.update_one({"key": doc["key"]}, {"$setOnInsert": doc}, upsert=True)

    def _next_ids(self, counter: str, count: int) -> int:
        """The first of ``count`` consecutive ids from a counter in ``meta``."""
        doc = self._meta.find_one_and_update(
            {"_id": counter}, {"$inc": {"value": count}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(doc["value"]) - count + 1

    def _stored_originals(self, batch: Sequence[NewMessage]) -> dict[tuple[str, str, str], Message]:
        """Messages already stored under a batch item's client id: one query per conversation."""
        wanted: defaultdict[str, defaultdict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for item in batch:
            wanted[item.conv][item.sender].add(item.client_msg_id)
        originals: dict[tuple[str, str, str], Message] = {}
        for conv, by_sender in wanted.items():
            query = {
                "conv": conv,
                "$or": [
                    {"sender": sender, "client_msg_id": {"$in": sorted(ids)}} for sender, ids in by_sender.items()
                ],
            }
            for doc in self._messages.find(query):
                message = _message(doc)
                originals[(message.conv, message.sender, message.client_msg_id)] = message
        return originals

    def _reserve(self, conv: str, count: int) -> int:
        """Reserve ``count`` seqs of ``conv``; returns the first. A hole just below them (a previous
        writer reserved and never stored) is filled with tombstones first."""
        counter = self._convs.find_one_and_update(
            {"_id": conv}, {"$inc": {"last_seq": count}}, return_document=ReturnDocument.AFTER
        )
        first = int(counter["last_seq"]) - count + 1
        if self._stored_upto.get(conv) != first - 1:
            below = self._messages.find_one({"conv": conv, "seq": {"$lt": first}}, {"seq": 1},
                                            sort=[("seq", DESCENDING)])  # fmt: skip
            retained_from = int(counter.get("first_seq", 1))  # below it retention purged: no hole
            self._fill_hole(conv, range(max(int(below["seq"]) + 1 if below else 1, retained_from), first))
        return first

    def _fill_hole(self, conv: str, seqs: range) -> None:
        if not seqs:
            return
        log.warning("conversation %s: seqs %d..%d were reserved and never stored; filling them with tombstones",
                    conv, seqs[0], seqs[-1])  # fmt: skip
        docs = [_message_doc(hole_tombstone(conv, seq)) | {"erased": True} for seq in seqs]
        try:
            self._messages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:  # a late write (or another filler) took some of them: theirs stand
            if any(error.get("code") != _DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise

    def _note_stored(self, docs: list[dict[str, Any]]) -> None:
        """After a successful insert: every seq of these ranges is stored (a raced seq is filled)."""
        for doc in docs:
            conv, seq = doc["conv"], int(doc["seq"])
            if self._stored_upto.get(conv, seq - 1) >= seq - 1:
                self._stored_upto[conv] = max(seq, self._stored_upto.get(conv, 0))

    def _insert(self, docs: list[dict[str, Any]]) -> list[_Raced]:
        """insert_many, resolving a client id that a concurrent writer stored first; such a message's
        reserved seq gets a tombstone rather than its message being acked twice."""
        raced: list[_Raced] = []
        while docs:
            try:
                self._messages.insert_many(docs, ordered=True)
                return raced
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or errors[0].get("code") != _DUPLICATE_KEY:
                    raise
                failed = docs[errors[0]["index"]]
                key = (failed["conv"], failed["sender"], failed["client_msg_id"])
                original = self._messages.find_one(
                    {"conv": key[0], "sender": key[1], "client_msg_id": key[2]}
                )
                if original is None:  # the (conv, seq) index fired: the counter is broken, stop
                    raise
                raced.append(_Raced(key, _message(original)))
                self._fill_hole(key[0], range(int(failed["seq"]), int(failed["seq"]) + 1))
                docs = docs[errors[0]["index"] + 1 :]
        return raced

    def history(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> HistoryPage:
        query = _page_query(conv_id, before, after, limit)
        newest_first = after is None
        cursor = self._history.find(query).sort("seq", DESCENDING if newest_first else ASCENDING).limit(limit + 1)
        docs = list(cursor)
        messages = [_message(doc) for doc in docs[:limit]]
        if newest_first:
            messages.reverse()
        return HistoryPage(messages=messages, has_more=len(docs) > limit)

    def message_view(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> ViewPage:
        query = {**_page_query(conv_id, before, after, limit), "kind": None}  # None: no kind field, a message
        newest_first = after is None
        docs = list(self._history.find(query).sort("seq", DESCENDING if newest_first else ASCENDING).limit(limit + 1))
        page = docs[:limit]
        reactions: dict[int, Any] = {}
        if page:
            rows = self._reactions.find(
                {"conv": conv_id, "seq": {"$in": [int(d["seq"]) for d in page]}, "active": True},
                {"seq": 1, "emoji": 1, "user": 1, "op_seq": 1, "group_seq": 1},
            ).sort([("group_seq", ASCENDING), ("op_seq", ASCENDING)])
            reactions = fold_reactions([(int(r["seq"]), r["emoji"], r["user"]) for r in rows])
        views = [_view(doc, reactions) for doc in page]
        if newest_first:
            views.reverse()
        return ViewPage(messages=views, has_more=len(docs) > limit)

    def search(self, user: str, query: SearchQuery) -> SearchPage:
        if query.limit < 1:
            raise ValueError(f"limit must be at least 1, got {query.limit}")
        # The conversations the user is a member of now: the members index, as a conversation
        # list reads it (on a sharded cluster every shard answers from its index); then the message
        # query names them, so it goes only to the shards that hold them.
        convs = [doc["_id"] for doc in self._convs.find({"members": user}, {"_id": 1})]
        if query.conv is not None:
            convs = [c for c in convs if c == query.conv]
        if not convs:
            return SearchPage([], [], False)
        spec: dict[str, Any] = {"conv": {"$in": convs}, "terms": {"$all": list(query.words)}}
        if query.sender is not None:
            spec["sender"] = query.sender
        if query.before is not None:
            ts, conv, seq = decode_cursor(query.before, (int, str, int))
            spec["$or"] = [{"ts": {"$lt": ts}}, {"ts": ts, "conv": {"$lt": conv}},
                           {"ts": ts, "conv": conv, "seq": {"$lt": seq}}]  # fmt: skip
        docs = list(self._history.find(spec).sort(_NEWEST_FIRST).limit(query.limit + 1))
        page = docs[: query.limit]
        cursors = [encode_cursor([int(doc["ts"]), doc["conv"], int(doc["seq"])]) for doc in page]
        return SearchPage([_view(doc, {}) for doc in page], cursors, len(docs) > len(page))

    def media_attached(self, conv_id: str, media_id: str) -> bool:
        return self._media_refs.find_one({"conv": conv_id, "media_id": media_id}, {"_id": 1}) is not None

    # --- receipts and read state -------------------------------------------------------------
    def apply_receipts(self, updates: Sequence[ReceiptUpdate]) -> list[ReceiptResult]:
        results: list[ReceiptResult] = []
        for update in updates:
            conv = self._convs.find_one({"_id": update.conv}, {"last_seq": 1})
            if conv is None:
                results.append(ReceiptResult(ReceiptOutcome.UNKNOWN_CONVERSATION, 0))
                continue
            last_seq = int(conv.get("last_seq", 0))
            if update.seq > last_seq:
                results.append(ReceiptResult(ReceiptOutcome.SEQ_AHEAD, last_seq))
                continue
            field = "read_seq" if update.status == "read" else "delivered_seq"
            raised = {"delivered_seq": update.seq, field: update.seq}
            # The filter names the shard key (user) and conv: an upsert on a sharded collection
            # must carry the full shard key, and the upsert copies both into a new document.
            marker_key = {"_id": f"{update.conv}/{update.user}", "user": update.user, "conv": update.conv}
            unset = {k: 0 for k in ("delivered_seq", "read_seq") if k not in raised}
            before = self._markers.find_one_and_update(
                marker_key,
                {"$max": raised, **({"$setOnInsert": unset} if unset else {})},  # MongoDB < 5 refuses {}
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            moved = before is None or int(before.get(field, 0)) < update.seq
            if moved:
                self._markers.update_one(marker_key, {"$max": {"updated_at": update.ts}})
                if update.status == "read":  # may clear notifications on the reader's other devices
                    self._outbox.insert_one(
                        {"_id": self._next_ids(_OUTBOX_ID, 1), "key": f"r:{update.conv}/{update.user}/{update.seq}",
                         "kind": OUTBOX_READ, "conv": update.conv, "seq": update.seq, "user": update.user,
                         "event": None, "ts": update.ts}
                    )  # fmt: skip
            results.append(ReceiptResult(ReceiptOutcome.MOVED if moved else ReceiptOutcome.UNCHANGED, last_seq))
        return results

    def markers(self, conv_id: str) -> list[Marker]:
        return [_marker(doc) for doc in self._markers.find({"conv": conv_id}).sort("user", ASCENDING)]

    def markers_of(self, user_id: str) -> dict[str, Marker]:
        return {doc["conv"]: _marker(doc) for doc in self._markers.find({"user": user_id})}

    def count_unread(self, conv_id: str, user_id: str, after_seq: int) -> int:
        return int(
            self._history.count_documents({"conv": conv_id, "seq": {"$gt": after_seq}, "sender": {"$ne": user_id},
                                           "kind": None, "erased": {"$ne": True}})
        )

    # --- conversation events ------------------------------------------------------------------
    def pending_events(self, limit: int = 500) -> list[ConversationEvent]:
        return [
            ConversationEvent(
                id=int(doc["_id"]), kind=doc["kind"], conv=doc["conv"], subject=doc.get("subject"),
                title=doc.get("title"), recipients=tuple(doc.get("recipients", ())), ts=int(doc["ts"]),
            )
            for doc in self._events.find().sort("_id", ASCENDING).limit(limit)
        ]

    def delete_events(self, ids: Sequence[int]) -> None:
        if ids:
            self._events.delete_many({"_id": {"$in": list(ids)}})


    # --- push targets and mutes ----------------------------------------------------------------
    def put_push_target(self, target: PushTarget) -> PushTarget:
        stored = replace(target, updated_at=now_ms())
        key = f"{stored.user}/{stored.device}"
        self._push_targets.delete_many(
            {"platform": stored.platform, "token": stored.token, "_id": {"$ne": key}}
        )  # a scatter on a sharded cluster: rare (a registration), and a token must have one owner
        self._push_targets.replace_one({"_id": key, "user": stored.user}, _target_doc(stored), upsert=True)
        return stored

    def push_targets(self, users: Sequence[str]) -> list[PushTarget]:
        if not users:
            return []
        docs = self._push_targets.find({"user": {"$in": sorted(set(users))}})
        return sorted((_push_target(doc) for doc in docs), key=lambda t: (t.user, t.device))

    def delete_push_target(self, user: str, device: str) -> bool:
        return self._push_targets.delete_one({"_id": f"{user}/{device}", "user": user}).deleted_count > 0

    def delete_push_tokens(self, platform: str, tokens: Sequence[str]) -> int:
        if not tokens:
            return 0
        query = {"platform": platform, "token": {"$in": sorted(set(tokens))}}
        return self._push_targets.delete_many(query).deleted_count

    def set_mute(self, conv: str, user: str, until: int | None) -> None:
        key = {"_id": f"{conv}/{user}", "conv": conv}
        if until is None:
            self._mutes.delete_one(key)
        else:
            self._mutes.replace_one(key, {**key, "user": user, "until": until}, upsert=True)

    def mute(self, conv: str, user: str) -> int | None:
        doc = self._mutes.find_one({"_id": f"{conv}/{user}", "conv": conv})
        return None if doc is None else int(doc["until"])

    def muted_members(self, conv: str, users: Sequence[str], now: int) -> set[str]:
        if not users:
            return set()
        query = {"conv": conv, "user": {"$in": sorted(set(users))}, "$or": [{"until": 0}, {"until": {"$gt": now}}]}
        return {doc["user"] for doc in self._mutes.find(query, {"user": 1})}

    # --- the delivery outbox, deliveries and webhook subscriptions -----------------------------
    def pending_outbox(self, limit: int = 500) -> list[OutboxEntry]:
        return [
            OutboxEntry(int(doc["_id"]), doc["kind"], doc["conv"], int(doc.get("seq", 0)), doc.get("user"),
                        event_from_document(doc["event"]) if doc.get("event") else None, int(doc["ts"]))
            for doc in self._outbox.find().sort("_id", ASCENDING).limit(limit)
        ]  # fmt: skip

    def delete_outbox(self, ids: Sequence[int]) -> None:
        if ids:
            self._outbox.delete_many({"_id": {"$in": list(ids)}})

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        ids = [d.id for d in deliveries]
        existing = {doc["_id"] for doc in self._deliveries.find({"_id": {"$in": ids}}, {"_id": 1})}
        fresh = list({d.id: d for d in deliveries if d.id not in existing}.values())
        if not fresh:
            return 0
        first, now = self._next_ids(_DELIVERY_N, len(fresh)), now_ms()
        added = 0
        for i, delivery in enumerate(fresh):
            doc = _delivery_doc(replace(delivery, n=first + i, created_at=now, updated_at=now))
            try:
                self._deliveries.insert_one(doc)
                added += 1
            except DuplicateKeyError:  # written meanwhile by another writer: leave it
                continue
        return added

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        doc = self._deliveries.find_one({"_id": delivery_id})
        return _delivery(doc) if doc else None

    def latest_deliveries(self, order_keys: Sequence[str]) -> dict[str, Delivery]:
        if not order_keys:
            return {}
        newest = self._deliveries.aggregate([
            {"$match": {"order_key": {"$in": sorted(set(order_keys))}}},
            {"$sort": {"n": -1}},
            {"$group": {"_id": "$order_key", "newest": {"$first": "$$ROOT"}}},
        ])  # fmt: skip
        return {doc["_id"]: _delivery(doc["newest"]) for doc in newest}

    def replace_pending_payload(self, delivery_id: str, payload: dict[str, Any]) -> bool:
        result = self._deliveries.update_one(
            {"_id": delivery_id, "state": DELIVERY_PENDING},
            {"$set": {"payload": payload, "updated_at": now_ms()}, "$inc": {"version": 1}},
        )
        return result.modified_count > 0

    def conversation_deliveries(self, conv: str) -> list[Delivery]:
        found = self._deliveries.find({"order_key": {"$regex": ":" + re.escape(conv) + "$"}}).sort("n", ASCENDING)
        return [_delivery(doc) for doc in found]

    def apply_dispatch(self, batch: DispatchBatch) -> None:
        """In order, each step idempotent (no multi-document transactions on a standalone server):
        a crash part way repeats the pass, which adds nothing twice."""
        for delivery_id, payload in batch.redactions:
            self._deliveries.update_one({"_id": delivery_id}, {"$set": {"payload": payload, "updated_at": now_ms()}})
        instead = [c.instead for c in batch.collapses if not self.replace_pending_payload(c.delivery_id, c.payload)]
        if batch.cancels:
            self._deliveries.update_many(
                {"_id": {"$in": list(batch.cancels)}, "state": DELIVERY_PENDING},
                {"$set": {"state": DELIVERY_CANCELLED, "updated_at": now_ms()}},
            )
        self.add_deliveries([*batch.deliveries, *instead])
        self.delete_outbox(batch.consumed)

    def due_deliveries(self, now: int, limit: int = 100, exclude: Sequence[str] = ()) -> list[Delivery]:
        skip = set(exclude)
        heads = self._deliveries.aggregate([
            {"$match": {"state": DELIVERY_PENDING}},
            {"$sort": {"n": 1}},
            {"$group": {"_id": "$order_key", "head": {"$first": "$$ROOT"}}},
            {"$replaceRoot": {"newRoot": "$head"}},
            {"$match": {"next_at": {"$lte": now}}},
            {"$sort": {"n": 1}},
            {"$limit": limit + len(skip)},
        ])  # fmt: skip
        return [d for d in map(_delivery, heads) if d.id not in skip][:limit]

    def record_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        now = now_ms()
        return [
            self._deliveries.update_one(
                {"_id": a.delivery_id, "version": a.version},
                {"$set": {"state": a.state, "next_at": a.next_at, "last_error": a.error, "updated_at": now},
                 "$inc": {"attempts": 1}},
            ).modified_count > 0
            for a in attempts
        ]  # fmt: skip

    def set_delivery_state(self, delivery_id: str, state: str, next_at: int | None = None) -> bool:
        fields: dict[str, Any] = {"state": state, "updated_at": now_ms()}
        if next_at is not None:
            fields["next_at"] = next_at
        return self._deliveries.update_one({"_id": delivery_id}, {"$set": fields}).matched_count > 0

    def replay_deliveries(self, ids: Sequence[str], now: int) -> int:
        if not ids:
            return 0
        result = self._deliveries.update_many(
            {"_id": {"$in": sorted(set(ids))}},
            {"$set": {"state": DELIVERY_PENDING, "attempts": 0, "next_at": now, "last_error": None, "updated_at": now},
             "$inc": {"version": 1}},
        )  # fmt: skip
        return result.matched_count

    def list_deliveries(
        self, channel: str | None = None, state: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        query = {k: v for k, v in (("channel", channel), ("state", state), ("target", target)) if v is not None}
        return [_delivery(doc) for doc in self._deliveries.find(query).sort("n", DESCENDING).limit(limit)]

    def prune_deliveries(self, before: int) -> int:
        return self._deliveries.delete_many(
            {"state": {"$in": [DELIVERED, DELIVERY_CANCELLED]}, "updated_at": {"$lt": before}}
        ).deleted_count

    def add_webhook(self, webhook: Webhook) -> Webhook:
        stored = replace(webhook, created_at=webhook.created_at or now_ms())
        try:
            self._webhooks.insert_one({"_id": stored.id, "url": stored.url, "secret": stored.secret,
                                       "events": list(stored.events), "created_at": stored.created_at})
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"webhook {webhook.id!r} already exists") from exc
        return stored

    def webhooks(self) -> list[Webhook]:
        return [
            Webhook(doc["_id"], doc["url"], doc["secret"], tuple(doc.get("events", ())), int(doc.get("created_at", 0)))
            for doc in self._webhooks.find().sort("_id", ASCENDING)
        ]

    def remove_webhook(self, webhook_id: str) -> bool:
        return self._webhooks.delete_one({"_id": webhook_id}).deleted_count > 0

    # --- bulk read and write: full export/import ------------------------------------------------
    def log_entries(self, conv_id: str, *, after: int = 0, limit: int = 500) -> list[LogEntry]:
        docs = list(self._messages.find({"conv": conv_id, "seq": {"$gt": seq_bound(after)}})
                    .sort("seq", ASCENDING).limit(limit))  # fmt: skip
        targets = sorted({int(d["target"]) for d in docs if d.get("kind") == EntryKind.DELETE})
        erased: dict[int, tuple[str, ...]] = {}
        if targets:
            erased = {int(d["seq"]): tuple(d.get("erased_media") or ()) for d in self._messages.find(
                {"conv": conv_id, "seq": {"$in": targets}}, {"seq": 1, "erased_media": 1})}
        return [LogEntry(_message(d), erased.get(int(d["target"]), ()) if d.get("kind") == EntryKind.DELETE else ())
                for d in docs]  # fmt: skip

    def mutes(self, convs: Sequence[str]) -> list[Mute]:
        if not convs:
            return []
        docs = self._mutes.find({"conv": {"$in": sorted(set(convs))}})
        return sorted((Mute(d["conv"], d["user"], int(d["until"])) for d in docs), key=lambda m: (m.conv, m.user))

    def restore_users(self, users: Sequence[User]) -> int:
        for user in users:
            require_id(user.id, "user id")
        added = self._insert_absent(self._users, [_user_doc(u) for u in users])
        if added:
            self._bump_users()
        return added

    def _insert_absent(self, collection: Collection[Any], docs: list[dict[str, Any]]) -> int:
        """Insert the documents whose _id is free; how many were."""
        if not docs:
            return 0
        try:
            return len(collection.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            return int(exc.details.get("nInserted", 0))

    def restore_conversations(self, convs: Sequence[Conversation]) -> int:
        for conv in convs:
            require_id(conv.id, "conversation id")
        wanted = sorted({user for conv in convs for user in conv.members})
        known = {doc["_id"] for doc in self._users.find({"_id": {"$in": wanted}}, {"_id": 1})}
        for conv in convs:
            for user in conv.members:
                if user not in known:
                    raise NotFound(f"no user {user!r} (member of {conv.id!r})")
        stored = {doc["_id"]: set(doc.get("members", ())) for doc in
                  self._convs.find({"_id": {"$in": [c.id for c in convs]}}, {"members": 1})}  # fmt: skip
        added = 0
        for conv in convs:
            if conv.id not in stored:
                doc = {"_id": conv.id, "members": sorted(set(conv.members)), "title": conv.title, "owner": conv.owner,
                       "created_at": conv.created_at, "last_seq": conv.first_seq - 1, "first_seq": conv.first_seq,
                       "retention_days": conv.retention_days}  # a purged log starts at first_seq
                changed = self._insert_absent(self._convs, [doc]) + len(doc["members"])
            else:
                missing = sorted(set(conv.members) - stored[conv.id])
                if missing:
                    self._convs.update_one({"_id": conv.id}, {"$addToSet": {"members": {"$each": missing}}})
                changed = len(missing)
            if changed:
                self._bump_membership(conv.id)
                added += 1
        return added

    def restore_entries(self, entries: Sequence[LogEntry]) -> int:
        """Entries first, then their changes folded in (idempotent, as ``append`` does; a resumed
        import folds again the changes of entries stored before an interruption), then the counter."""
        if not entries:
            return 0
        conv = restored_conv(entries)
        for entry in entries:
            encode_attachments(entry.message.attachments)  # fail before writing
        counter = self._convs.find_one({"_id": conv}, {"first_seq": 1})
        if counter is None:
            raise NotFound(f"no conversation {conv!r}")
        starts = int(counter.get("first_seq", 1))
        first, last = entries[0].message.seq, entries[-1].message.seq
        stored = {int(d["seq"]): str(d["_id"]) for d in self._messages.find(
            {"conv": conv, "seq": {"$gte": max(first - 1, 1), "$lte": last}}, {"seq": 1})}  # fmt: skip
        docs = []
        for entry in entries:
            message = entry.message
            if message.seq in stored:
                require_same_entry(message, stored[message.seq])
                continue
            if message.seq > starts and message.seq - 1 not in stored:
                raise RestoreConflict(f"conversation {conv!r}: entry {message.seq} would leave a gap "
                                      f"(seq {message.seq - 1} is not stored)")
            stored[message.seq] = message.id
            docs.append(_message_doc(message) | ({"erased": True} if message.erased else {}))
        if docs:
            self._messages.insert_many(docs, ordered=True)
        self._add_media_refs([e.message for e in entries if e.message.attachments])
        for entry in entries:
            if entry.message.kind in CHANGE_KINDS:
                self._apply_change(entry.message)
                if entry.message.kind == EntryKind.DELETE:
                    self._messages.update_one({"conv": conv, "seq": entry.message.target},
                                              {"$set": {"erased_media": list(entry.erased_media)}})
        self._convs.update_one({"_id": conv}, {"$max": {"last_seq": last}})
        self._stored_upto.pop(conv, None)
        return len(docs)

    def restore_markers(self, markers: Sequence[Marker]) -> int:
        changed = 0
        for m in markers:
            key = {"_id": f"{m.conv}/{m.user}", "user": m.user, "conv": m.conv}
            before = self._markers.find_one_and_update(
                key, {"$max": {"delivered_seq": m.delivered_seq, "read_seq": m.read_seq, "updated_at": m.updated_at}},
                upsert=True, return_document=ReturnDocument.BEFORE,
            )
            changed += before is None or int(before.get("delivered_seq", 0)) < m.delivered_seq \
                or int(before.get("read_seq", 0)) < m.read_seq  # fmt: skip
        return changed

    def restore_push_targets(self, targets: Sequence[PushTarget]) -> int:
        return self._insert_absent(self._push_targets, [_target_doc(t) for t in targets])

    def restore_mutes(self, mutes: Sequence[Mute]) -> int:
        return self._insert_absent(self._mutes, [{"_id": f"{m.conv}/{m.user}", "conv": m.conv, "user": m.user,
                                                  "until": m.until} for m in mutes])  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------
    # --- data lifecycle: retention and erasure --------------------------------------------------
    # No multi-document transactions (see the module doc): each method writes in an order that a
    # repeat after a crash completes (a purge moves first_seq last; erasure steps are idempotent).
    def set_retention(self, conv_id: str, days: int | None) -> None:
        if self._convs.update_one({"_id": conv_id}, {"$set": {"retention_days": days}}).matched_count == 0:
            raise NotFound(f"no conversation {conv_id!r}")

    def purge_expired(self, conv_id: str, before_ts: int, limit: int) -> Erased:
        conv = self._convs.find_one({"_id": conv_id}, {"first_seq": 1})
        if conv is None:
            raise NotFound(f"no conversation {conv_id!r}")
        first = int(conv.get("first_seq", 1))
        docs = list(self._messages.find({"conv": conv_id, "seq": {"$gte": first}},
                                        {"seq": 1, "ts": 1, "edit_seqs": 1, "delete_seq": 1})
                    .sort("seq", ASCENDING).limit(limit + 1))  # fmt: skip
        expired: list[dict[str, Any]] = []
        for doc in docs[:limit]:
            if int(doc["ts"]) >= before_ts:
                break
            expired.append(doc)
        more = len(expired) == limit and len(docs) > limit and int(docs[limit]["ts"]) < before_ts
        if not expired:
            return Erased(first_seq=first)
        high = int(expired[-1]["seq"])
        span = {"conv": conv_id, "seq": {"$gte": first, "$lte": high}}
        media = tuple(dict.fromkeys(r["media_id"] for r in self._media_refs.find(span, {"media_id": 1})))
        kept_edits = [int(seq) for doc in expired if "delete_seq" not in doc
                      for seq in doc.get("edit_seqs") or () if int(seq) > high]  # fmt: skip
        if kept_edits:
            self._messages.update_many({"conv": conv_id, "seq": {"$in": kept_edits}},
                                       {"$set": {"body": "", "erased": True}})  # fmt: skip
        self._reactions.delete_many(span)
        self._messages.delete_many(span)
        self._outbox.delete_many({"conv": conv_id, "kind": OUTBOX_MESSAGE, "seq": {"$lte": high}})
        self._media_refs.delete_many(span)
        self._convs.update_one({"_id": conv_id}, {"$max": {"first_seq": high + 1}})
        return Erased(seqs=tuple(range(first, high + 1)), media=media, first_seq=high + 1, more=more)

    def erase_messages(self, conv_id: str, seqs: Sequence[int], by: str, ts: int) -> Erased:
        if self._convs.find_one({"_id": conv_id}, {"_id": 1}) is None:
            raise NotFound(f"no conversation {conv_id!r}")
        wanted = list(dict.fromkeys(int(s) for s in seqs))
        docs = {int(d["seq"]): d for d in self._messages.find({"conv": conv_id, "seq": {"$in": wanted}})}
        erased: list[int] = []
        media: dict[str, None] = {}
        for seq in wanted:
            doc = docs.get(seq)
            if doc is None or doc.get("kind") or "delete_seq" in doc:
                continue  # not in the log, not a message, or deleted already
            media.update(dict.fromkeys(self._erase_message(conv_id, doc, Change(seq, by, ts))))
            erased.append(seq)
        return Erased(seqs=tuple(erased), media=tuple(media))

    def messages_of(self, conv_id: str, user: str, *, after: int = 0, limit: int = 500) -> list[int]:
        found = self._messages.find(
            {"conv": conv_id, "sender": user, "seq": {"$gt": after}, "kind": None,
             "delete_seq": {"$exists": False}, "erased": {"$ne": True}},
            {"seq": 1},
        ).sort("seq", ASCENDING).limit(limit)  # fmt: skip
        return [int(d["seq"]) for d in found]

    def erase_reactions(self, conv_id: str, user: str) -> int:
        gone = self._reactions.count_documents({"conv": conv_id, "user": user, "active": True})
        self._reactions.delete_many({"conv": conv_id, "user": user})
        self._messages.update_many(
            {"conv": conv_id, "sender": user, "kind": {"$in": [str(EntryKind.REACT), str(EntryKind.UNREACT)]}},
            {"$set": {"body": "", "erased": True}, "$unset": {"emoji": ""}},
        )
        return int(gone)

    def forget_user(self, user_id: str) -> list[str]:
        result = self._users.update_one(
            {"_id": user_id},
            {"$set": {"disabled": True, "password_hash": "", "display_name": None, "avatar": None}},
        )
        if result.matched_count == 0:
            raise NotFound(f"no user {user_id!r}")
        self._bump_users()
        self._markers.delete_many({"user": user_id})
        self._mutes.delete_many({"user": user_id})  # a rare operator action may ask every shard
        self._push_targets.delete_many({"user": user_id})
        left = [str(d["_id"]) for d in self._convs.find({"members": user_id}, {"_id": 1}).sort("_id", ASCENDING)]
        for conv in left:
            self.remove_member(conv, user_id)
        return left

    def delete_conversation(self, conv_id: str) -> Erased:
        doc = self._convs.find_one({"_id": conv_id}, {"members": 1})
        if doc is None:
            raise NotFound(f"no conversation {conv_id!r}")
        members = list(doc.get("members") or ())
        media = tuple(dict.fromkeys(r["media_id"] for r in self._media_refs.find({"conv": conv_id}, {"media_id": 1})))
        for collection in (self._messages, self._reactions, self._media_refs, self._mutes):
            collection.delete_many({"conv": conv_id})
        self._markers.delete_many({"conv": conv_id})  # a rare operator action may ask every shard
        self._outbox.delete_many({"conv": conv_id})
        self._deliveries.delete_many({"order_key": {"$regex": ":" + re.escape(conv_id) + "$"}})
        self._convs.delete_one({"_id": conv_id})
        for user in members:  # told as for a removal (their clients drop the conversation)
            self._record_event(EVENT_MEMBER_REMOVED, conv_id, user, None, [user], now_ms())
        self._bump_membership(conv_id)
        return Erased(media=media)

    def ping(self) -> None:
        self._db.command("ping")

    def close(self) -> None:
        self._db.client.close()


def durable_write_concern(explicit: WriteConcern) -> WriteConcern:
    """The URL's write concern options laid over journaled majority (so ``?wtimeoutMS=5000``
    alone keeps w=majority, j=true). w=0 is refused: an unacknowledged write cannot back an ack."""
    document = {**DURABLE.document, **explicit.document}
    if document.get("w") == 0:
        raise ValueError("store URL sets w=0: chatmq acks a message only once it is stored, use w=majority")
    return WriteConcern(
        w=document.get("w"), wtimeout=document.get("wtimeout"), j=document.get("j"), fsync=document.get("fsync")
    )


class _Raced(NamedTuple):
    key: tuple[str, str, str]
    original: Message


def _user(doc: dict[str, Any]) -> User:
    return User(
        id=doc["_id"],
        password_hash=doc["password_hash"],
        disabled=bool(doc.get("disabled", False)),
        created_at=int(doc.get("created_at", 0)),
        display_name=doc.get("display_name"),
        avatar=doc.get("avatar"),
    )


def _user_doc(user: User) -> dict[str, Any]:
    return {"_id": user.id, "password_hash": user.password_hash, "disabled": user.disabled,
            "created_at": user.created_at, "display_name": user.display_name, "avatar": user.avatar}


def _conversation(doc: dict[str, Any]) -> Conversation:
    return Conversation(
        id=doc["_id"],
        members=tuple(sorted(doc.get("members", ()))),
        title=doc.get("title"),
        owner=doc.get("owner"),
        created_at=int(doc.get("created_at", 0)),
        last_seq=int(doc.get("last_seq", 0)),
        first_seq=int(doc.get("first_seq", 1)),
        retention_days=doc.get("retention_days"),
    )


def _marker(doc: dict[str, Any]) -> Marker:
    return Marker(
        conv=doc["conv"],
        user=doc["user"],
        delivered_seq=int(doc.get("delivered_seq", 0)),
        read_seq=int(doc.get("read_seq", 0)),
        updated_at=int(doc.get("updated_at", 0)),
    )


def _page_query(conv_id: str, before: int | None, after: int | None, limit: int) -> dict[str, Any]:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    before, after = seq_bound(before), seq_bound(after)
    seq: dict[str, int] = {}
    if before is not None:
        seq["$lt"] = before
    if after is not None:
        seq["$gt"] = after
    return {"conv": conv_id, "seq": seq} if seq else {"conv": conv_id}


def _new_entry(item: NewMessage, seq: int, attachments: str | None) -> Message:
    return Message(
        conv=item.conv, seq=seq, id=new_message_id(), sender=item.sender, client_msg_id=item.client_msg_id,
        body=item.body, ts=item.ts, attachments=tuple(orjson.loads(attachments)) if attachments else (),
        kind=item.kind, target=item.target if item.kind in CHANGE_KINDS else None,
        reply_to=item.reply_to if item.kind == EntryKind.MESSAGE else None, emoji=item.emoji,
    )


def _message_doc(message: Message) -> dict[str, Any]:
    """A stored entry; a message has no ``kind`` field (as before entry kinds existed)."""
    doc: dict[str, Any] = {
        "_id": message.id,
        "conv": message.conv,
        "seq": message.seq,
        "sender": message.sender,
        "client_msg_id": message.client_msg_id,
        "body": message.body,
        "ts": message.ts,
        "attachments": [dict(a) for a in message.attachments],
    }
    if message.kind != EntryKind.MESSAGE:
        doc["kind"] = str(message.kind)
        doc["target"] = message.target
    elif not message.erased:
        doc["terms"] = terms(message.body)  # the words search finds it by (chatmq.core.search)
    if message.reply_to is not None:
        doc["reply_to"] = message.reply_to
    if message.emoji is not None:
        doc["emoji"] = message.emoji
    return doc


def _message(doc: dict[str, Any]) -> Message:
    return Message(
        conv=doc["conv"],
        seq=int(doc["seq"]),
        id=str(doc["_id"]),
        sender=doc["sender"],
        client_msg_id=doc["client_msg_id"],
        body=doc["body"],
        ts=int(doc["ts"]),
        attachments=tuple(doc.get("attachments") or ()),
        kind=doc.get("kind") or EntryKind.MESSAGE,
        target=doc.get("target"),
        reply_to=doc.get("reply_to"),
        emoji=doc.get("emoji"),
        erased=bool(doc.get("erased", False)),
    )


def _view(doc: dict[str, Any], reactions: dict[int, Any]) -> MessageView:
    message = _message(doc)
    deleted = "delete_seq" in doc
    if "cur_body" in doc and not deleted:
        message = replace(message, body=doc["cur_body"])
    return MessageView(
        message=message,
        edited=Change(int(doc["edit_seq"]), message.sender, int(doc["edited_at"]))
        if "edit_seq" in doc and not deleted else None,
        deleted=Change(int(doc["delete_seq"]), doc["deleted_by"], int(doc["deleted_at"])) if deleted else None,
        reactions=reactions.get(message.seq, ()),
    )


def _media_ids(attachments: Sequence[Any]) -> list[str]:
    return [a["media_id"] for a in attachments if isinstance(a, dict) and isinstance(a.get("media_id"), str)]


def _outbox_message_doc(outbox_id: int, message: Message) -> dict[str, Any]:
    return {"_id": outbox_id, "key": f"m:{message.conv}/{message.seq}", "kind": OUTBOX_MESSAGE, "conv": message.conv,
            "seq": message.seq, "user": message.sender, "event": None, "ts": message.ts}  # fmt: skip


def _target_doc(target: PushTarget) -> dict[str, Any]:
    return {"_id": f"{target.user}/{target.device}", "user": target.user, "device": target.device,
            "platform": target.platform, "token": target.token, "app_id": target.app_id,
            "preview": target.preview, "updated_at": target.updated_at}  # fmt: skip


def _push_target(doc: dict[str, Any]) -> PushTarget:
    return PushTarget(doc["user"], doc["device"], doc["platform"], doc["token"], doc.get("app_id"),
                      bool(doc.get("preview", True)), int(doc.get("updated_at", 0)))  # fmt: skip


def _delivery_doc(delivery: Delivery) -> dict[str, Any]:
    return {"_id": delivery.id, "channel": delivery.channel, "target": delivery.target,
            "order_key": delivery.order_key, "payload": delivery.payload, "state": delivery.state,
            "attempts": delivery.attempts, "next_at": delivery.next_at, "version": delivery.version,
            "created_at": delivery.created_at, "updated_at": delivery.updated_at,
            "last_error": delivery.last_error, "n": delivery.n}  # fmt: skip


def _delivery(doc: dict[str, Any]) -> Delivery:
    return Delivery(str(doc["_id"]), doc["channel"], doc["target"], doc["order_key"], dict(doc["payload"]),
                    doc["state"], int(doc.get("attempts", 0)), int(doc.get("next_at", 0)),
                    int(doc.get("version", 0)), int(doc.get("created_at", 0)), int(doc.get("updated_at", 0)),
                    doc.get("last_error"), int(doc.get("n", 0)))  # fmt: skip
