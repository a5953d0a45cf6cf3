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

from chatmq.core.protocol import (
    CHANGE_KINDS,
    MAX_REACTIONS_PER_MEMBER,
    MAX_SEQ,
    EditPayload,
    EntryKind,
    EntryPayload,
    ErrorCode,
    ReactionPayload,
    SendPayload,
)
from chatmq.core.search import SearchQuery


def now_ms() -> int:
    return time.time_ns() // 1_000_000


HOLE_SENDER = "@bridge"  # chatmq.core.config.SERVICE_USER: the service identity, no device can claim it


def new_message_id() -> str:
    return uuid.uuid4().hex


def hole_tombstone(conv: str, seq: int) -> Message:
    """What a store writes at a seq it reserved and never stored (a writer died in between): an
    erased entry by the service identity, so the log stays gapless and readers skip it as they skip
    any erased message."""
    return Message(conv=conv, seq=seq, id=new_message_id(), sender=HOLE_SENDER, client_msg_id=f"hole-{seq}",
                   body="", ts=int(time.time() * 1000), erased=True)


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
    avatar: str | None = None  # a media id (chatmq.core.media) the clients show as the picture


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
    # Where the retained log starts: every seq below it was purged by retention (history never
    # answers them again, and clients do not take them for gaps). 1 while nothing was purged.
    first_seq: int = 1
    retention_days: int | None = None  # None: the deployment's default; 0: keep forever


@dataclass(frozen=True, slots=True)
class NewMessage:
    """An entry of a conversation's log as the bridge accepted it, before it has a seq: a message
    (``kind`` "message", a reply when ``reply_to`` is set) or a change to the message at seq
    ``target`` (edit, delete, react, unreact; see chatmq.core.protocol.EntryKind)."""

    conv: str
    sender: str
    client_msg_id: str
    body: str
    ts: int  # ms since epoch, assigned by the server on receipt
    attachments: tuple[Mapping[str, Any], ...] = ()
    kind: str = EntryKind.MESSAGE
    target: int | None = None  # changes: the message they change
    reply_to: int | None = None  # messages: the earlier message they answer
    emoji: str | None = None  # react / unreact

    @classmethod
    def of(cls, conv: str, sender: str, payload: EntryPayload, ts: int) -> NewMessage:
        """The entry a validated ``chat/{conv}/send/{sender}`` payload asks for. A reaction's body is
        its emoji and an unreaction's or a deletion's is empty: what a v1 client shows for them."""
        cmid = payload.client_msg_id
        if isinstance(payload, SendPayload):
            return cls(conv, sender, cmid, payload.body, ts, tuple(payload.attachments), reply_to=payload.reply_to)
        if isinstance(payload, EditPayload):
            return cls(conv, sender, cmid, payload.body, ts, kind=EntryKind.EDIT, target=payload.target)
        if isinstance(payload, ReactionPayload):
            react = payload.kind == EntryKind.REACT
            return cls(conv, sender, cmid, payload.emoji if react else "", ts, kind=EntryKind(payload.kind),
                       target=payload.target, emoji=payload.emoji)
        return cls(conv, sender, cmid, "", ts, kind=EntryKind.DELETE, target=payload.target)


def entry_payload(
    conv: str, seq: int, msg_id: str, sender: str, client_msg_id: str, body: str, ts: int,
    attachments: Sequence[Mapping[str, Any]], kind: str, target: int | None, reply_to: int | None,
    emoji: str | None, erased: bool,
) -> dict[str, Any]:  # fmt: skip
    """An entry of the log as devices get it (``Message.to_payload``; a store's history page may
    build it straight from its rows). A message keeps the v1 shape (plus ``reply_to`` for a
    reply); a change says its ``kind`` and ``target``."""
    payload: dict[str, Any] = {
        "conv": conv,
        "seq": seq,
        "id": msg_id,
        "sender": sender,
        "client_msg_id": client_msg_id,
        "body": body,
        "attachments": [dict(a) for a in attachments],
        "ts": ts,
    }
    if kind != EntryKind.MESSAGE:
        payload["kind"] = kind
        payload["target"] = target
        if emoji is not None:
            payload["emoji"] = emoji
    elif reply_to is not None:
        payload["reply_to"] = reply_to
    if erased:
        payload["erased"] = True
    return payload


@dataclass(frozen=True, slots=True)
class Message:
    """One stored entry of the log, as it was appended: its content is kept until a deletion of
    its message erases it (``erased``: body and attachments are gone, the seq stays)."""

    conv: str
    seq: int
    id: str
    sender: str
    client_msg_id: str
    body: str
    ts: int
    attachments: tuple[Mapping[str, Any], ...] = field(default=())
    kind: str = EntryKind.MESSAGE
    target: int | None = None
    reply_to: int | None = None
    emoji: str | None = None
    erased: bool = False

    def to_payload(self) -> dict[str, Any]:
        """The ``chat/{conv}/msg`` payload and the API's raw entry (``entry_payload``)."""
        return entry_payload(self.conv, self.seq, self.id, self.sender, self.client_msg_id, self.body, self.ts,
                             self.attachments, self.kind, self.target, self.reply_to, self.emoji, self.erased)


@dataclass(frozen=True, slots=True)
class Change:
    """Who changed a message, by the entry at ``seq``, when."""

    seq: int
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class Reactions:
    """One emoji on one message: the members who put it there, earliest first. A message's emoji
    are in the order each was first put on it (once everyone took one back, putting it again puts
    it last), so a client folding the log (clients.Timeline) orders them the same way."""

    emoji: str
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as it stands now: ``message`` carries the latest text (a tombstone: none, and no
    attachments), with the last edit, the deletion and the reactions folded in. Stores keep this
    state up to date as entries are appended (never replayed on read)."""

    message: Message
    edited: Change | None = None
    deleted: Change | None = None
    reactions: tuple[Reactions, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        """A message of ``GET .../messages?view=messages`` (and its MQTT twin)."""
        m = self.message
        return {
            "conv": m.conv,
            "seq": m.seq,
            "id": m.id,
            "sender": m.sender,
            "client_msg_id": m.client_msg_id,
            "body": m.body,
            "attachments": [dict(a) for a in m.attachments],
            "ts": m.ts,
            "reply_to": m.reply_to,
            "edited": None if self.edited is None else {"seq": self.edited.seq, "ts": self.edited.ts},
            "deleted": None if self.deleted is None else
            {"seq": self.deleted.seq, "by": self.deleted.by, "ts": self.deleted.ts},
            "reactions": [{"emoji": r.emoji, "count": len(r.users), "users": list(r.users)} for r in self.reactions],
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an entry was not appended (nothing of it is stored)."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    message: Message | None  # the stored entry; None when refused
    duplicate: bool  # True: an earlier send with the same (conv, sender, client_msg_id) won
    refusal: Refusal | None = None
    # A deletion's erased attachments (also on a duplicate of it): media the caller removes from
    # the media store unless another message still attaches it (Store.media_attached).
    erased_media: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetState:
    """What a change or reply is checked against: the entry at the target seq as it stands."""

    kind: str
    sender: str
    ts: int
    deleted: bool
    reactions_of_sender: frozenset[str] = frozenset()  # the new entry's sender's emoji on it


def refusal_of(
    entry: NewMessage, target: TargetState | None, last_seq: int, owner: str | None, edit_window_ms: int
) -> Refusal | None:
    """The one rule every store applies to a change or a reply, given the state it targets (None:
    no entry at that seq). Messages without ``reply_to`` are never refused here."""
    seq = entry.target if entry.kind in CHANGE_KINDS else entry.reply_to
    if seq is None:
        return None
    if target is None:
        why = f"above the conversation's last seq {last_seq}" if seq > last_seq else "not in the log"
        return Refusal(ErrorCode.UNKNOWN_TARGET, f"no entry with seq {seq} in {entry.conv!r}: {why}")
    if target.kind != EntryKind.MESSAGE:
        return Refusal(ErrorCode.BAD_TARGET, f"seq {seq} is a {target.kind}, not a message")
    if target.deleted:
        return Refusal(ErrorCode.TARGET_DELETED, f"message {seq} was deleted")
    kind = entry.kind
    if kind == EntryKind.EDIT:
        if target.sender != entry.sender:
            return Refusal(ErrorCode.NOT_SENDER, f"message {seq} is {target.sender!r}'s: only its sender edits it")
        if edit_window_ms > 0 and entry.ts - target.ts > edit_window_ms:
            return Refusal(ErrorCode.EDIT_WINDOW_CLOSED,
                           f"message {seq} is older than the edit window ({edit_window_ms // 1000} s)")
    elif kind == EntryKind.DELETE:
        if target.sender != entry.sender and entry.sender != owner:
            return Refusal(ErrorCode.NOT_SENDER,
                           f"message {seq} is {target.sender!r}'s: only its sender or the conversation's owner "
                           "deletes it")
    elif kind == EntryKind.REACT:
        if entry.emoji in target.reactions_of_sender:
            return Refusal(ErrorCode.ALREADY_REACTED, f"you already reacted {entry.emoji} to message {seq}")
        if len(target.reactions_of_sender) >= MAX_REACTIONS_PER_MEMBER:
            return Refusal(ErrorCode.TOO_MANY_REACTIONS,
                           f"at most {MAX_REACTIONS_PER_MEMBER} different reactions per member on one message")
    elif kind == EntryKind.UNREACT and entry.emoji not in target.reactions_of_sender:
        return Refusal(ErrorCode.NOT_REACTED, f"you have no {entry.emoji} reaction on message {seq}")
    return None


def fold_reactions(rows: Sequence[tuple[int, str, str]]) -> dict[int, tuple[Reactions, ...]]:
    """(message seq, emoji, user) rows ordered by each emoji's group (when the emoji was first put
    on the message) then by reaction -> each message's reactions in that order."""
    grouped: dict[int, dict[str, list[str]]] = {}
    for seq, emoji, user in rows:
        grouped.setdefault(seq, {}).setdefault(emoji, []).append(user)
    return {seq: tuple(Reactions(e, tuple(u)) for e, u in emojis.items()) for seq, emojis in grouped.items()}


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
class LogAccess:
    """What a history page needs before it is read: the conversation's log bounds (as
    ``Conversation`` has them) and whether one user is a member."""

    id: str
    last_seq: int
    first_seq: int
    member: bool


@dataclass(frozen=True, slots=True)
class PayloadPage:
    """``HistoryPage`` as payloads (``entry_payload``), the shape the API and MQTT history send."""

    payloads: list[dict[str, Any]]  # ascending seq
    has_more: bool


@dataclass(frozen=True, slots=True)
class ViewPage:
    messages: list[MessageView]  # ascending seq; messages only, no change entries
    has_more: bool


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search results: messages as they stand now (no reactions), newest first."""

    messages: list[MessageView]
    cursors: list[str]  # each result's position: ``before=`` it continues after that result
    has_more: bool  # older results exist after the last one

    @property
    def next(self) -> str | None:
        """The cursor of the next (older) page; None: this was the last."""
        return self.cursors[-1] if self.has_more and self.cursors else None

    def to_payload(self) -> dict[str, Any]:
        return {"results": [search_result(v) for v in self.messages], "next": self.next}


def search_result(view: MessageView) -> dict[str, Any]:
    """A search result: the message as ``view=messages`` has it, without reactions."""
    payload = view.to_payload()
    del payload["reactions"]
    return payload


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



def event_document(event: ConversationEvent) -> dict[str, Any]:
    """A ConversationEvent as plain JSON (how the outbox keeps it)."""
    return {"id": event.id, "kind": event.kind, "conv": event.conv, "subject": event.subject,
            "title": event.title, "recipients": list(event.recipients), "ts": event.ts}  # fmt: skip


def event_from_document(doc: Mapping[str, Any]) -> ConversationEvent:
    return ConversationEvent(int(doc["id"]), doc["kind"], doc["conv"], doc.get("subject"), doc.get("title"),
                             tuple(doc.get("recipients", ())), int(doc["ts"]))  # fmt: skip


# --- the delivery outbox: push notifications and webhooks -------------------------------------
# What the store records, in the same transaction as the change itself, for the notifier
# (chatmq/core/notify/) to turn into push notifications and webhook deliveries.
OUTBOX_MESSAGE = "message"  # a message was stored: conv, seq, user = sender
OUTBOX_EVENT = "event"  # a conversation changed: conv, event
OUTBOX_READ = "read"  # a member's read marker moved forward: conv, seq, user = reader

PUSH_PLATFORMS = ("fcm", "apns")

DELIVERY_PUSH = "push"
DELIVERY_WEBHOOK = "webhook"
DELIVERY_PENDING = "pending"  # waiting for its next attempt (next_at)
DELIVERED = "delivered"  # the receiver answered 2xx; kept as the delivery log until pruned
DELIVERY_DEAD = "dead"  # retries exhausted or refused for good: waits for an operator's replay
DELIVERY_CANCELLED = "cancelled"  # no longer worth sending (read meanwhile, the user came online)
DELIVERY_STATES = (DELIVERY_PENDING, DELIVERED, DELIVERY_DEAD, DELIVERY_CANCELLED)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """Something the notifier must look at, in write order (``id`` ascends)."""

    id: int
    kind: str  # one of the OUTBOX_* constants
    conv: str
    seq: int  # the message's seq, or the read marker's; 0 for events
    user: str | None  # the sender, or the reader
    event: ConversationEvent | None  # for OUTBOX_EVENT
    ts: int


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One device's push registration: where a notification for ``user`` on ``device`` goes."""

    user: str
    device: str
    platform: str  # one of PUSH_PLATFORMS
    token: str  # the provider's device token (FCM registration token, APNs device token)
    app_id: str | None = None  # which app the token belongs to (the gateway picks credentials by it)
    preview: bool = True  # the device wants message text in notifications
    updated_at: int = 0

    @property
    def key(self) -> str:
        return f"{self.user}/{self.device}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification or webhook call, durable until delivered (at least once)."""

    id: str  # deterministic from what it delivers, so writing it twice is a no-op
    channel: str  # DELIVERY_PUSH or DELIVERY_WEBHOOK
    target: str  # push: "user/device"; webhook: the subscription id
    order_key: str  # deliveries with one key go out one at a time, in ``n`` order
    payload: dict[str, Any]
    state: str = DELIVERY_PENDING
    attempts: int = 0
    next_at: int = 0  # ms since epoch: not before
    version: int = 0  # bumped whenever the payload is replaced (a newer message collapsed into it)
    created_at: int = 0
    updated_at: int = 0
    last_error: str | None = None
    n: int = 0  # ascending in write order, assigned by the store


@dataclass(frozen=True, slots=True)
class Collapse:
    """A newer message for a notification still waiting: its payload replaces the waiting one's;
    if that one went out meanwhile (no longer pending), ``instead`` is added as a new delivery."""

    delivery_id: str
    payload: dict[str, Any]
    instead: Delivery


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    """One pass of the notifier's dispatch: what it decided for some outbox entries."""

    deliveries: Sequence[Delivery] = ()  # new ones (an id that exists is left alone)
    collapses: Sequence[Collapse] = ()
    cancels: Sequence[str] = ()  # pending deliveries no longer worth sending
    consumed: Sequence[int] = ()  # the outbox entries decided
    redactions: Sequence[tuple[str, dict[str, Any]]] = ()  # (delivery id, payload without erased text)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one attempt at a delivery, as ``Store.record_attempts`` records it."""

    delivery_id: str
    version: int  # the payload version that was sent
    state: str  # the delivery's state after it
    next_at: int  # when to try again (pending)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Erased:
    """What one erasing write of the data lifecycle removed (``Store.purge_expired``,
    ``erase_messages``, ``delete_conversation``)."""

    seqs: tuple[int, ...] = ()  # purge: the entries removed; erase: the messages made tombstones
    media: tuple[str, ...] = ()  # media ids the erased messages attached: the caller erases them from the
    # media store unless another message still attaches them (chatmq.core.media.erase_media)
    first_seq: int = 1  # purge: where the conversation's retained log starts now
    more: bool = False  # purge: expired entries remain beyond this batch (call again)


ERASED_BY_ADMIN = "@admin"  # chatmq.core.config.ADMIN_USER: the tombstone of an operator's redaction or erasure


@dataclass(frozen=True, slots=True)
class Webhook:
    """An operator's subscription: POST these events, signed with ``secret``, to ``url``."""

    id: str
    url: str
    secret: str
    events: tuple[str, ...]
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class Mute:
    """``user`` muted ``conv`` until ``until`` (ms; 0 = until unmuted)."""

    conv: str
    user: str
    until: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of a conversation's log as a full export carries it: the stored entry (its id,
    seq, kind, time, erasure) and, for a deletion, the media ids it erased (what a duplicate of the
    deletion reports again)."""

    message: Message
    erased_media: tuple[str, ...] = ()


class RestoreConflict(StoreError):
    """A restored entry's seq is taken by a different entry, or would leave a gap in the log."""


def restored_conv(entries: Sequence[LogEntry]) -> str:
    """The one conversation of a ``restore_entries`` batch, checked to ascend by seq."""
    conv = entries[0].message.conv
    seqs = [e.message.seq for e in entries]
    if any(e.message.conv != conv for e in entries) or seqs != sorted(set(seqs)):
        raise ValueError("restore_entries takes one conversation's entries in ascending seq")
    return conv


def require_same_entry(message: Message, stored_id: str) -> None:
    """Restoring an entry at a seq already stored: it must be the same entry (its id)."""
    if stored_id != message.id:
        raise RestoreConflict(f"conversation {message.conv!r}: seq {message.seq} holds entry {stored_id}, "
                              f"not {message.id}")


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
    def append(self, batch: Sequence[NewMessage], *, edit_window_ms: int = 0) -> list[AppendResult]:
        """Durably store a batch of entries, one result per input in input order.

        Each conversation's new entries get the next gapless seqs in batch order. An entry whose
        (conv, sender, client_msg_id) is already stored, or repeated earlier in the batch, is not
        stored again: its result carries the original entry and ``duplicate=True``. When this
        returns, the batch is durable. Raises NotFound (and stores nothing) if any conversation
        does not exist.

        Changes and replies are checked in order against the log as it stands at that point of
        the batch (``refusal_of``; edits older than ``edit_window_ms`` are refused when it is
        above 0): a refused one stores nothing, takes no seq and has ``refusal`` set. An accepted
        change updates the state ``message_view`` reads in the same write: an edit replaces the
        text, a deletion erases the message's body and attachments and the text of its edits
        (a tombstone keeps the seq) and drops its reactions, react/unreact add/remove one
        (member, emoji) on it.
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

    def history_payloads(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> PayloadPage:
        """``history`` as the payloads devices get: the same entries, bounds and ``has_more``. A
        store may build them from its rows without the ``Message`` objects (a history page's
        dearest part in the API, docs/benchmarks.md)."""
        page = self.history(conv_id, before=before, after=after, limit=limit)
        return PayloadPage([m.to_payload() for m in page.messages], page.has_more)

    def log_access(self, conv_id: str, user: str) -> LogAccess | None:
        """The conversation's log bounds and whether ``user`` is a member, as ``get_conversation``
        would give them; None when there is no such conversation. A store may answer it without
        reading every member (SQLite: one statement instead of a transaction of three)."""
        conversation = self.get_conversation(conv_id)
        if conversation is None:
            return None
        return LogAccess(conversation.id, conversation.last_seq, conversation.first_seq, user in conversation.members)

    @abc.abstractmethod
    def message_view(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> ViewPage:
        """A page of the conversation's messages as they stand now (no change entries), with
        ``history``'s bounds and paging, counted in messages."""

    @abc.abstractmethod
    def search(self, user: str, query: SearchQuery) -> SearchPage:
        """Messages with every word of ``query`` (chatmq.core.search) in the conversations ``user`` is
        a member of now (checked in the same read), newest first by server time; ``query.conv`` and
        ``query.sender`` narrow them. The index follows the log in the write that changes it: an
        edit is found by its new words only, a deleted message not at all. Raises
        SearchQueryError for a cursor this store did not make."""

    def compact_search_index(self) -> int:
        """Rewrite the parts of the search index that still hold words of deleted, erased, purged
        or edited-away messages (never found, but not yet gone from the files), in short steps that
        let writers in between; returns the steps taken, 0 when nothing left the index since the
        last run. A no-op where the index drops them at once (MongoDB). The retention job and the
        erasures of chatmq.core.lifecycle call it."""
        return 0

    @abc.abstractmethod
    def media_attached(self, conv_id: str, media_id: str) -> bool:
        """True if a message of the conversation that is not deleted attaches the media."""

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
        """Messages with seq > after_seq sent by someone else and not deleted (your own are never
        unread; changes, such as edits and reactions, are not messages)."""

    # --- conversation events (outbox) ---------------------------------------------------------
    @abc.abstractmethod
    def pending_events(self, limit: int = 500) -> list[ConversationEvent]:
        """The oldest unpublished events, ascending id."""

    @abc.abstractmethod
    def delete_events(self, ids: Sequence[int]) -> None:
        """Forget published events (idempotent)."""


    # --- push targets and mutes ----------------------------------------------------------------
    @abc.abstractmethod
    def put_push_target(self, target: PushTarget) -> PushTarget:
        """Register (or replace) the device's target. A token belongs to one device: the same
        (platform, token) registered elsewhere before is removed (a phone that changed hands)."""

    @abc.abstractmethod
    def push_targets(self, users: Sequence[str]) -> list[PushTarget]:
        """The targets of these users, ordered by (user, device)."""

    @abc.abstractmethod
    def delete_push_target(self, user: str, device: str) -> bool:
        """Forget one device's target; False if there was none."""

    @abc.abstractmethod
    def delete_push_tokens(self, platform: str, tokens: Sequence[str]) -> int:
        """Forget every target with one of these tokens (the provider said they are dead)."""

    @abc.abstractmethod
    def set_mute(self, conv: str, user: str, until: int | None) -> None:
        """Mute ``conv`` for ``user`` until ``until`` (ms; 0 = until unmuted); None unmutes."""

    @abc.abstractmethod
    def mute(self, conv: str, user: str) -> int | None:
        """None when not muted, else the ``until`` it was muted with (0 = until unmuted)."""

    @abc.abstractmethod
    def muted_members(self, conv: str, users: Sequence[str], now: int) -> set[str]:
        """Which of ``users`` have ``conv`` muted at ``now``."""

    # --- the delivery outbox, deliveries and webhook subscriptions -----------------------------
    @abc.abstractmethod
    def pending_outbox(self, limit: int = 500) -> list[OutboxEntry]:
        """The oldest entries not yet consumed, ascending id."""

    @abc.abstractmethod
    def delete_outbox(self, ids: Sequence[int]) -> None:
        """Consume entries (idempotent)."""

    @abc.abstractmethod
    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Store new deliveries (``n``, ``created_at`` and ``updated_at`` assigned here); one whose id
        exists already is left as it is. Returns how many were new."""

    @abc.abstractmethod
    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    @abc.abstractmethod
    def latest_deliveries(self, order_keys: Sequence[str]) -> dict[str, Delivery]:
        """For each order key that has deliveries, the newest one (highest ``n``), in any state."""

    def latest_delivery(self, order_key: str) -> Delivery | None:
        return self.latest_deliveries([order_key]).get(order_key)

    @abc.abstractmethod
    def conversation_deliveries(self, conv: str) -> list[Delivery]:
        """Every delivery (any state) whose order key is one of the conversation's (``...:{conv}``):
        what to redact when a message of it is deleted."""

    @abc.abstractmethod
    def apply_dispatch(self, batch: DispatchBatch) -> None:
        """Write one dispatch pass: collapses, cancels, new deliveries, then consume the outbox
        entries; one transaction on SQLite (a pass costs one commit). Safe to repeat: delivery ids
        are deterministic, so a pass written again after a crash adds nothing twice."""

    @abc.abstractmethod
    def replace_pending_payload(self, delivery_id: str, payload: dict[str, Any]) -> bool:
        """Give a still pending delivery a newer payload (``version`` + 1); False if not pending."""

    @abc.abstractmethod
    def due_deliveries(self, now: int, limit: int = 100, exclude: Sequence[str] = ()) -> list[Delivery]:
        """Pending deliveries to attempt now: per order key only the oldest pending one (so one
        key's deliveries go out in order), and only when its ``next_at`` has come. Ascending ``n``."""

    @abc.abstractmethod
    def record_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        """The outcomes of attempts, all in one write: for each, attempts + 1, the new state and
        next attempt time, if the delivery is still at the attempt's ``version``. False for one
        whose payload was replaced during the attempt (nothing changed: the newer payload still
        has to go)."""

    @abc.abstractmethod
    def set_delivery_state(self, delivery_id: str, state: str, next_at: int | None = None) -> bool:
        """Force a state (cancel, or back to pending); False for an unknown id."""

    @abc.abstractmethod
    def replay_deliveries(self, ids: Sequence[str], now: int) -> int:
        """Pending again from ``now`` with no attempts counted (an operator's replay). Returns how many."""

    @abc.abstractmethod
    def list_deliveries(
        self, channel: str | None = None, state: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        """The newest deliveries first, filtered."""

    @abc.abstractmethod
    def prune_deliveries(self, before: int) -> int:
        """Forget delivered and cancelled deliveries last updated before ``before`` (dead ones stay)."""

    @abc.abstractmethod
    def add_webhook(self, webhook: Webhook) -> Webhook:
        """Raises AlreadyExists for a taken id."""

    @abc.abstractmethod
    def webhooks(self) -> list[Webhook]:
        """Every subscription, ordered by id."""

    @abc.abstractmethod
    def remove_webhook(self, webhook_id: str) -> bool: ...

    # --- data lifecycle: retention and erasure (chatmq/core/lifecycle.py drives these) --------------
    @abc.abstractmethod
    def set_retention(self, conv_id: str, days: int | None) -> None:
        """Keep the conversation's entries ``days`` days (0: forever; None: the deployment's
        default). Raises NotFound."""

    @abc.abstractmethod
    def purge_expired(self, conv_id: str, before_ts: int, limit: int) -> Erased:
        """Remove at most ``limit`` of the conversation's oldest entries whose ``ts`` is below
        ``before_ts``, in seq order and stopping at the first that is younger, so the retained log
        stays one run of seqs from ``first_seq`` (which moves past them) to ``last_seq``. What the
        removed messages left elsewhere goes in the same write: their state, reactions, media
        references, search index rows, and the text of their edits that are still retained (those
        become erased entries). Raises NotFound for an unknown conversation."""

    @abc.abstractmethod
    def erase_messages(self, conv_id: str, seqs: Sequence[int], by: str, ts: int) -> Erased:
        """An operator's erasure of messages at ``seqs`` (a redaction, or a user's erasure): each
        becomes a tombstone exactly as a deletion makes one (body, attachments, the text of its
        edits, reactions and search index rows erased), with no entry of its own: the tombstone's
        ``deleted`` names ``by`` and the message's own seq. Seqs that are not messages, already
        deleted or not in the log are skipped (idempotent); ``Erased.seqs`` lists those erased
        now. Raises NotFound for an unknown conversation."""

    @abc.abstractmethod
    def messages_of(self, conv_id: str, user: str, *, after: int = 0, limit: int = 500) -> list[int]:
        """Seqs above ``after`` (ascending, at most ``limit``) of the messages ``user`` sent to the
        conversation that are not deleted: what an erasure of the user pages through."""

    @abc.abstractmethod
    def erase_reactions(self, conv_id: str, user: str) -> int:
        """Take away every reaction ``user`` put on the conversation's messages and blank their
        react and unreact entries (erased, no emoji). Returns how many reactions went."""

    @abc.abstractmethod
    def forget_user(self, user_id: str) -> list[str]:
        """The account part of a user's erasure, in one write: disabled, no password, no display
        name or avatar; their markers, mutes and push targets deleted; removed from every
        conversation (members are told as for any removal). The user id stays, so it is never given
        to someone else and tombstones keep naming it. Returns the conversations they left.
        Raises NotFound."""

    @abc.abstractmethod
    def delete_conversation(self, conv_id: str) -> Erased:
        """Delete the conversation and everything of it: log, state, reactions, media references,
        search index rows, markers, mutes, members (each told, as for a removal), its pending
        notifier work and its delivery log. ``Erased.media`` lists what it attached. Raises
        NotFound."""

    # --- bulk read and write: full export/import (chatmq/cli/transfer.py) ------------------------------
    # Writes here restore what another store holds, as it was: ids, seqs, times and state are kept,
    # no rule is checked again, and nothing is told (no outbox, no conversation events). Each is
    # idempotent: what is already there is left alone, so an import can be repeated or resumed.
    @abc.abstractmethod
    def log_entries(self, conv_id: str, *, after: int = 0, limit: int = 500) -> list[LogEntry]:
        """The oldest ``limit`` entries of the log with seq > ``after``, ascending, erased ones included."""

    @abc.abstractmethod
    def mutes(self, convs: Sequence[str]) -> list[Mute]:
        """Every mute of these conversations (expired ones too), ordered by (conv, user)."""

    @abc.abstractmethod
    def restore_users(self, users: Sequence[User]) -> int:
        """Insert the users that are absent, with every field as given; returns how many."""

    @abc.abstractmethod
    def restore_conversations(self, convs: Sequence[Conversation]) -> int:
        """Insert the conversations that are absent (id, title, owner, created_at, retention,
        ``first_seq``: where a purged log starts; ``last_seq`` follows the entries restored) and
        add members missing from any of them; returns how many conversations were added or gained
        members. Raises NotFound naming an unknown member."""

    @abc.abstractmethod
    def restore_entries(self, entries: Sequence[LogEntry]) -> int:
        """Append one conversation's entries exactly as given (ascending seq), folding changes into
        their messages' state as ``append`` does; returns how many were new. An entry whose seq
        holds the same entry id already is skipped; a seq holding another entry, or one past the
        conversation's next seq, raises RestoreConflict before anything of the batch is written
        (SQLite) or before that entry (MongoDB). Raises NotFound for an unknown conversation."""

    @abc.abstractmethod
    def restore_markers(self, markers: Sequence[Marker]) -> int:
        """Set markers, each only forward (as receipts move them); returns how many changed."""

    @abc.abstractmethod
    def restore_push_targets(self, targets: Sequence[PushTarget]) -> int:
        """Insert the targets whose (user, device) is absent, ``updated_at`` kept; returns how many."""

    @abc.abstractmethod
    def restore_mutes(self, mutes: Sequence[Mute]) -> int:
        """Insert the mutes whose (conv, user) is absent; returns how many."""

    # --- lifecycle --------------------------------------------------------------------------
    @abc.abstractmethod
    def ping(self) -> None:
        """Raise if the backing database is unreachable."""

    @abc.abstractmethod
    def close(self) -> None: ...
