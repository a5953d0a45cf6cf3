"""The storage interface shared by every backend (SQLite embedded, MongoDB in production).

One contract test suite (tests/store/) runs against each backend, so the bridge and the API never
need to know which one they talk to. All methods are blocking; callers in an event loop use a thread.
"""

from __future__ import annotations

import abc
import enum
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_message_id() -> str:
    return uuid.uuid4().hex


def encode_attachments(attachments: Sequence[Any]) -> str | None:
    """JSON text, or None for none; raises ValueError before anything is written."""
    if not attachments:
        return None
    try:
        return orjson.dumps([dict(a) for a in attachments]).decode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attachments are not JSON-serializable: {exc}") from exc


class StoreError(Exception):
    """Base for storage errors callers are expected to handle."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: str
    password_hash: str  # argon2id; "" for a user without a password (logs in with external tokens)
    disabled: bool = False
    created_at: int = 0  # ms since epoch
    display_name: str | None = None  # what chat clients show instead of the id
    avatar: str | None = None  # a media id (chatcore.media) the clients show as the picture


@dataclass(frozen=True, slots=True)
class NewUser:
    """One user of a bulk ``Store.create_users``."""

    id: str
    password_hash: str = ""
    display_name: str | None = None
    avatar: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    members: tuple[str, ...]  # sorted
    title: str | None = None
    owner: str | None = None
    created_at: int = 0
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as the bridge accepted it, before it has a seq."""

    conv: str
    sender: str
    client_msg_id: str
    body: str
    ts: int  # ms since epoch, assigned by the server on receipt
    attachments: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    conv: str
    seq: int
    id: str
    sender: str
    client_msg_id: str
    body: str
    ts: int
    attachments: tuple[Mapping[str, Any], ...] = field(default=())

    def to_payload(self) -> dict[str, Any]:
        """The ``chat/{conv}/msg`` payload and the API's message representation."""
        return {
            "conv": self.conv,
            "seq": self.seq,
            "id": self.id,
            "sender": self.sender,
            "client_msg_id": self.client_msg_id,
            "body": self.body,
            "attachments": [dict(a) for a in self.attachments],
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class AppendResult:
    message: Message
    duplicate: bool  # True: an earlier send with the same (conv, sender, client_msg_id) won


MAX_SEQ = 2**63 - 1  # seqs are signed 64-bit integers in every store (SQLite INTEGER, BSON int64)
MEMBERSHIP_LOG_KEEP = 10_000  # membership changes a store keeps for views that follow them one by one
MEMBERSHIP_LOG_PRUNE_EVERY = 1_000  # versions between two prunes of that log


@dataclass(frozen=True, slots=True)
class MembershipChanges:
    """The answer of ``Store.membership_changes``."""

    version: int  # the membership version these changes bring the caller to
    members: dict[str, frozenset[str] | None]  # changed conversation -> its members now (None: gone)


def seq_bound(bound: int | None) -> int | None:
    """A history bound the database can hold: no seq exceeds MAX_SEQ, so a larger bound selects
    the same messages as MAX_SEQ does (``before``: all of them; ``after``: none)."""
    return None if bound is None else min(bound, MAX_SEQ)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[Message]  # ascending seq
    has_more: bool


@dataclass(frozen=True, slots=True)
class Marker:
    """How far one member has got in one conversation: everything up to the seq is delivered/read."""

    conv: str
    user: str
    delivered_seq: int = 0
    read_seq: int = 0
    updated_at: int = 0  # ms since epoch of the last forward move; 0 for never


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    """A member's receipt as the bridge accepted it: move ``status``'s marker up to ``seq``."""

    conv: str
    user: str
    seq: int
    status: str  # "delivered" | "read"; reading implies delivery, so "read" moves both markers
    ts: int


class ReceiptOutcome(enum.Enum):
    MOVED = "moved"  # the marker of the receipt's status went forward and is durable
    UNCHANGED = "unchanged"  # at or below the stored marker: markers only move forward
    SEQ_AHEAD = "seq_ahead"  # above the conversation's last seq: refused, nothing stored
    UNKNOWN_CONVERSATION = "unknown_conversation"


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    outcome: ReceiptOutcome
    last_seq: int  # the conversation's last seq when the receipt was applied (0 if unknown)


# What a ConversationEvent records; the bridge turns it into per-user payloads.
EVENT_CREATED = "created"
EVENT_MEMBER_ADDED = "member_added"
EVENT_MEMBER_REMOVED = "member_removed"
EVENT_TITLE_CHANGED = "title_changed"


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """One membership or title change, written by the store together with the change itself
    (a transactional outbox), so every writer (API, admin CLI) produces it and none is lost
    between "changed" and "told"; the bridge publishes it on ``user/{user}/events`` and deletes it.
    """

    id: int
    kind: str  # one of the EVENT_* constants
    conv: str
    subject: str | None  # the user added or removed
    title: str | None  # the title after the change
    recipients: tuple[str, ...]  # members after the change, plus a removed member
    ts: int


class Store(abc.ABC):
    """Users, conversations, memberships and the per-conversation message log."""

    # --- users ------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_user(
        self, user_id: str, password_hash: str, *, display_name: str | None = None, avatar: str | None = None
    ) -> User:
        """Raises AlreadyExists. An empty ``password_hash`` makes a user no password matches."""

    @abc.abstractmethod
    def create_users(self, users: Sequence[NewUser]) -> list[bool]:
        """Create many users at once (bulk provisioning), one answer per input in order: True if
        created, False if the id already existed (that user is left unchanged) or came earlier in
        ``users``. Durable when this returns; ids are validated before anything is written."""

    @abc.abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    def get_users(self, user_ids: Sequence[str]) -> list[User]:
        """The known ones of ``user_ids``, ordered by id (unknown ids are left out)."""

    @abc.abstractmethod
    def list_users(self, *, after: str | None = None, limit: int | None = None) -> list[User]:
        """Users ordered by id; ``after`` an id (exclusive) and ``limit`` page through them."""

    @abc.abstractmethod
    def count_users(self) -> int: ...

    @abc.abstractmethod
    def set_profile(self, user_id: str, display_name: str | None, avatar: str | None) -> None:
        """Set both profile fields (None clears one). Raises NotFound."""

    @abc.abstractmethod
    def set_password(self, user_id: str, password_hash: str) -> None:
        """Raises NotFound."""

    @abc.abstractmethod
    def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Raises NotFound."""

    @abc.abstractmethod
    def users_version(self) -> int:
        """A number that changes whenever a user is created, disabled or enabled, or given a new
        password (cheap to poll: what mirrors the user list, like the Mosquitto sync, need not
        read the whole list twice a second)."""

    # --- conversations ----------------------------------------------------------------------
    @abc.abstractmethod
    def create_conversation(
        self, conv_id: str, members: Sequence[str], title: str | None = None, owner: str | None = None
    ) -> Conversation:
        """Raises AlreadyExists for a taken id and NotFound naming the first unknown member."""

    @abc.abstractmethod
    def get_conversation(self, conv_id: str) -> Conversation | None: ...

    @abc.abstractmethod
    def list_conversations(
        self, member: str | None = None, *, after: str | None = None, limit: int | None = None
    ) -> list[Conversation]:
        """All conversations, or those ``member`` belongs to; ordered by id. ``after`` an id
        (exclusive) and ``limit`` page through them."""

    @abc.abstractmethod
    def count_conversations(self) -> int: ...

    @abc.abstractmethod
    def add_member(self, conv_id: str, user_id: str) -> None:
        """Idempotent. Raises NotFound for an unknown conversation or user."""

    @abc.abstractmethod
    def remove_member(self, conv_id: str, user_id: str) -> None:
        """Idempotent. Raises NotFound for an unknown conversation."""

    @abc.abstractmethod
    def set_title(self, conv_id: str, title: str | None) -> None:
        """Raises NotFound. Records an EVENT_TITLE_CHANGED for the members."""

    @abc.abstractmethod
    def memberships(self) -> dict[str, frozenset[str]]:
        """Every conversation's member set: the broker's and bridge's access view."""

    @abc.abstractmethod
    def membership_version(self) -> int:
        """A number that changes whenever any membership changes (cheap to poll)."""

    def membership_changes(self, since: int) -> MembershipChanges | None:
        """What changed after version ``since``: the conversations whose members changed, with their
        member sets now, and the version that brings the caller to. None when the store cannot tell
        (its change log no longer reaches back to ``since``, or a change is still being written):
        the caller then reloads ``memberships()`` whole. Lets a view follow one change at the cost
        of one conversation instead of all of them."""
        return None

    # --- message log ------------------------------------------------------------------------
    @abc.abstractmethod
    def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """Durably store a batch, one result per input in input order.

        Each conversation's new messages get the next gapless seqs in batch order. A message whose
        (conv, sender, client_msg_id) is already stored, or repeated earlier in the batch, is not
        stored again: its result carries the original message and ``duplicate=True``. When this
        returns, the batch is durable. Raises NotFound (and stores nothing) if any conversation
        does not exist.
        """

    @abc.abstractmethod
    def history(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """A page of the log in ascending seq.

        Neither bound: the newest ``limit``. ``before``: the newest ``limit`` with seq < before,
        has_more meaning older ones exist. ``after``: the oldest ``limit`` with seq > after,
        has_more meaning newer ones exist. Both bounds together: the oldest ``limit`` strictly
        between them. A bound past ``MAX_SEQ`` means what it says (every seq is below it), never
        an overflow: see ``seq_bound``.
        """

    # --- receipts and read state -------------------------------------------------------------
    @abc.abstractmethod
    def apply_receipts(self, updates: Sequence[ReceiptUpdate]) -> list[ReceiptResult]:
        """Move markers forward, one result per update in order; durable when this returns.

        A seq at or below the stored marker changes nothing; a seq above the conversation's
        last seq is refused and stores nothing. Membership is the caller's check.
        """

    @abc.abstractmethod
    def markers(self, conv_id: str) -> list[Marker]:
        """Every stored marker of a conversation, ordered by user (members never seen: absent)."""

    @abc.abstractmethod
    def markers_of(self, user_id: str) -> dict[str, Marker]:
        """The user's marker in each conversation where one is stored, by conversation id."""

    @abc.abstractmethod
    def count_unread(self, conv_id: str, user_id: str, after_seq: int) -> int:
        """Messages with seq > after_seq sent by someone else (your own are never unread)."""

    # --- conversation events (outbox) ---------------------------------------------------------
    @abc.abstractmethod
    def pending_events(self, limit: int = 500) -> list[ConversationEvent]:
        """The oldest unpublished events, ascending id."""

    @abc.abstractmethod
    def delete_events(self, ids: Sequence[int]) -> None:
        """Forget published events (idempotent)."""

    # --- lifecycle --------------------------------------------------------------------------
    @abc.abstractmethod
    def ping(self) -> None:
        """Raise if the backing database is unreachable."""

    @abc.abstractmethod
    def close(self) -> None: ...
