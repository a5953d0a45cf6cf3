"""The wire contract v1: topic names and payload schemas, defined once (see docs/protocol.md).

Every component builds and parses topics through this module and validates inbound payloads with
its models, so the broker's access rules, the bridge and the clients can never disagree on a name.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chatmq.core import search
from chatmq.core.ids import is_valid_id

PROTOCOL_VERSION = 1
DEFAULT_MAX_BODY_BYTES = 4096
# The broker's default largest MQTT packet: a bigger one closes the connection, unacknowledged.
DEFAULT_MAX_PACKET_BYTES = 64 * 1024
MAX_CLIENT_MSG_ID_CHARS = 64
MAX_ATTACHMENTS = 16
MAX_ATTACHMENT_NAME_CHARS = 255
MAX_TYPING_BYTES = 64  # {"typing": false} is 17; room for whitespace, not for anything else
MEDIA_ID_PATTERN = r"[0-9a-f]{32}"  # what POST /v1/media assigns
MAX_EMOJI_BYTES = 32  # one emoji (a family ZWJ sequence is 25 bytes) or a short shortcode
MAX_REACTIONS_PER_MEMBER = 20  # distinct emoji one member may have on one message
MAX_REQUEST_ID_CHARS = 64  # the id of a history request over MQTT

# QoS per topic kind, as the contract states.
QOS_SEND = 1
QOS_MSG = 1
QOS_ACK = 1
QOS_TYPING = 0
QOS_PRESENCE = 1
QOS_RECEIPT = 1
QOS_RECEIPTS = 1
QOS_EVENTS = 1
QOS_NOTICE = 0  # a fan-out-on-read notice on chat/{conv}/msg: a hint, the history API is the truth
QOS_HISTORY = 1  # user/{user}/history/request and .../response

RECEIPT_STATUSES = ("delivered", "read")
FANOUT_WRITE = "write"  # full messages pushed to every member (QoS 1)
FANOUT_READ = "read"  # compact notices (QoS 0); members fetch bodies through the history API
DEFAULT_FANOUT_READ_THRESHOLD = 200


class TopicKind(enum.Enum):
    SEND = "send"  # chat/{conv}/send/{user}
    MSG = "msg"  # chat/{conv}/msg
    TYPING = "typing"  # chat/{conv}/typing/{user}
    ACK = "ack"  # user/{user}/ack
    DEVICE_PRESENCE = "device_presence"  # presence/{user}/{device}
    USER_PRESENCE = "user_presence"  # presence/{user}
    RECEIPT = "receipt"  # chat/{conv}/receipt/{user}
    RECEIPTS = "receipts"  # chat/{conv}/receipts
    EVENTS = "events"  # user/{user}/events
    HISTORY_REQUEST = "history_request"  # user/{user}/history/request
    HISTORY_RESPONSE = "history_response"  # user/{user}/history/response


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed chat topic. Fields not used by the kind are None."""

    kind: TopicKind
    conv: str | None = None
    user: str | None = None
    device: str | None = None


def send_topic(conv: str, user: str) -> str:
    return f"chat/{conv}/send/{user}"


def msg_topic(conv: str) -> str:
    return f"chat/{conv}/msg"


def typing_topic(conv: str, user: str) -> str:
    return f"chat/{conv}/typing/{user}"


def ack_topic(user: str) -> str:
    return f"user/{user}/ack"


def receipt_topic(conv: str, user: str) -> str:
    return f"chat/{conv}/receipt/{user}"


def receipts_topic(conv: str) -> str:
    return f"chat/{conv}/receipts"


def events_topic(user: str) -> str:
    return f"user/{user}/events"


def history_request_topic(user: str) -> str:
    return f"user/{user}/history/request"


def history_response_topic(user: str) -> str:
    return f"user/{user}/history/response"


def device_presence_topic(user: str, device: str) -> str:
    return f"presence/{user}/{device}"


def presence_topic(user: str) -> str:
    return f"presence/{user}"


# What the bridge subscribes to (as the service identity).
BRIDGE_SUBSCRIPTIONS: tuple[tuple[str, int], ...] = (
    ("chat/+/send/+", QOS_SEND),
    ("chat/+/receipt/+", QOS_RECEIPT),
    ("presence/+/+", QOS_PRESENCE),
    ("user/+/history/request", QOS_HISTORY),
)

# Top-level topic levels owned by chatmq; everything else is outside the chat namespace.
NAMESPACES = frozenset({"chat", "user", "presence"})


def parse_topic(topic: str) -> Topic | None:
    """Parse a concrete topic name (no wildcards) into a Topic, or None if it is not a chat topic.

    Every id level must be a valid id, so a topic with ``+``, ``#`` or ``$`` in an id never parses.
    """
    levels = topic.split("/")
    n = len(levels)
    head = levels[0]
    if head == "chat" and n >= 3 and is_valid_id(levels[1]):
        conv, verb = levels[1], levels[2]
        if n == 3 and verb == "msg":
            return Topic(TopicKind.MSG, conv=conv)
        if n == 3 and verb == "receipts":
            return Topic(TopicKind.RECEIPTS, conv=conv)
        if n == 4 and is_valid_id(levels[3]):
            if verb == "send":
                return Topic(TopicKind.SEND, conv=conv, user=levels[3])
            if verb == "typing":
                return Topic(TopicKind.TYPING, conv=conv, user=levels[3])
            if verb == "receipt":
                return Topic(TopicKind.RECEIPT, conv=conv, user=levels[3])
        return None
    if head == "user" and n == 3 and is_valid_id(levels[1]):
        if levels[2] == "ack":
            return Topic(TopicKind.ACK, user=levels[1])
        if levels[2] == "events":
            return Topic(TopicKind.EVENTS, user=levels[1])
        return None
    if head == "user" and n == 4 and is_valid_id(levels[1]) and levels[2] == "history":
        if levels[3] == "request":
            return Topic(TopicKind.HISTORY_REQUEST, user=levels[1])
        if levels[3] == "response":
            return Topic(TopicKind.HISTORY_RESPONSE, user=levels[1])
        return None
    if head == "presence" and is_valid_id(levels[1] if n > 1 else None):
        if n == 2:
            return Topic(TopicKind.USER_PRESENCE, user=levels[1])
        if n == 3 and is_valid_id(levels[2]):
            return Topic(TopicKind.DEVICE_PRESENCE, user=levels[1], device=levels[2])
    return None


# ---------------------------------------------------------------------------------------------
# Payloads. Inbound ones (from devices) are pydantic models; outbound ones are built by the
# server from stored data and encoded directly.


class ErrorCode(enum.StrEnum):
    BAD_PAYLOAD = "bad_payload"
    TOO_LARGE = "too_large"
    EMPTY = "empty"  # no text (empty or only whitespace) and no attachments: nothing to show
    NOT_MEMBER = "not_member"
    UNKNOWN_CONVERSATION = "unknown_conversation"
    SEQ_AHEAD = "seq_ahead"  # a receipt for a seq the conversation does not have yet
    BAD_ATTACHMENT = "bad_attachment"  # an attachment names media the sender did not upload
    RATE_LIMITED = "rate_limited"  # transient: resend later with the same client_msg_id
    INTERNAL = "internal"
    # Changes (edit, delete, react, unreact) and replies, refused against the log as it stands:
    WRONG_CONVERSATION = "wrong_conversation"  # the payload's conv is not the topic's
    UNKNOWN_TARGET = "unknown_target"  # no entry with that seq in the conversation
    BAD_TARGET = "bad_target"  # the seq is a change, not a message
    TARGET_DELETED = "target_deleted"  # the message was deleted
    NOT_SENDER = "not_sender"  # someone else's message (delete: unless you own the conversation)
    EDIT_WINDOW_CLOSED = "edit_window_closed"  # older than the server's edit window
    ALREADY_REACTED = "already_reacted"  # react: this member already has this emoji on it
    NOT_REACTED = "not_reacted"  # unreact: this member has no such reaction on it
    TOO_MANY_REACTIONS = "too_many_reactions"  # react: the member's distinct emoji on it are at the cap


class EntryKind(enum.StrEnum):
    """What one entry of a conversation's log is. Every entry has its own seq; a change names the
    message it changes by ``target`` (a seq), so replaying the log in seq order rebuilds every
    message as it stands."""

    MESSAGE = "message"  # a message (a reply when it has reply_to); on the wire its kind is implicit
    EDIT = "edit"  # new text for the target, by its sender
    DELETE = "delete"  # the target erased: a tombstone keeps its seq
    REACT = "react"  # the sender put emoji on the target
    UNREACT = "unreact"  # the sender took that emoji back


CHANGE_KINDS = frozenset({EntryKind.EDIT, EntryKind.DELETE, EntryKind.REACT, EntryKind.UNREACT})


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Attachment(_Inbound):
    """One entry of a send's ``attachments``: media the sender uploaded with ``POST /v1/media``.

    The upload's answer is a valid attachment as it stands. The bridge checks that the media
    exists, was uploaded by the sender and that ``mime``/``size``/``sha256`` are the stored ones,
    so receivers can trust them without fetching; ``url`` is always ``/v1/media/{media_id}``.
    """

    media_id: str = Field(pattern=f"^{MEDIA_ID_PATTERN}$")
    mime: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    url: str | None = None
    sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    name: str | None = Field(default=None, min_length=1, max_length=MAX_ATTACHMENT_NAME_CHARS)


class _Entry(_Inbound):
    """Fields every entry a device sends on ``chat/{conv}/send/{user}`` has."""

    client_msg_id: str = Field(min_length=1, max_length=MAX_CLIENT_MSG_ID_CHARS)
    conv: str | None = None  # optional: the conversation the device means; must be the topic's


class SendPayload(_Entry):
    """``chat/{conv}/send/{user}``: a message (a reply when ``reply_to`` names an earlier seq)."""

    kind: Literal["message"] = "message"
    body: str
    attachments: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    reply_to: int | None = Field(default=None, ge=1)

    @field_validator("attachments")
    @classmethod
    def _attachments_are_media(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each entry must be an Attachment; kept as the plain dict the device sent (minus nulls)."""
        checked = [Attachment.model_validate(item).model_dump(exclude_none=True) for item in value]
        for item in checked:
            if "url" in item and item["url"] != f"/v1/media/{item['media_id']}":
                raise ValueError(f"url must be /v1/media/{item['media_id']} (the media's own url)")
        return checked


class EditPayload(_Entry):
    """New text for message ``target`` (the sender's own); attachments stay as sent."""

    kind: Literal["edit"]
    target: int = Field(ge=1)
    body: str


class DeletePayload(_Entry):
    """Delete message ``target`` (the sender's own, or any if you own the conversation)."""

    kind: Literal["delete"]
    target: int = Field(ge=1)


class ReactionPayload(_Entry):
    """Put ``emoji`` on message ``target`` (react) or take it back (unreact)."""

    kind: Literal["react", "unreact"]
    target: int = Field(ge=1)
    emoji: str

    @field_validator("emoji")
    @classmethod
    def _one_emoji(cls, value: str) -> str:
        size = len(value.encode("utf-8", "surrogatepass"))
        if not 0 < size <= MAX_EMOJI_BYTES:
            raise ValueError(f"must be 1 to {MAX_EMOJI_BYTES} bytes of UTF-8")
        if any(unicodedata.category(ch) in ("Cc", "Cs", "Zs", "Zl", "Zp") or ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace or control characters")
        return value


EntryPayload: TypeAlias = SendPayload | EditPayload | DeletePayload | ReactionPayload
_ENTRY_MODELS: dict[str, type[_Entry]] = {
    EntryKind.MESSAGE: SendPayload,
    EntryKind.EDIT: EditPayload,
    EntryKind.DELETE: DeletePayload,
    EntryKind.REACT: ReactionPayload,
    EntryKind.UNREACT: ReactionPayload,
}


class TypingPayload(_Inbound):
    """``chat/{conv}/typing/{user}``: ephemeral, never stored."""

    typing: bool


class ReceiptPayload(_Inbound):
    """``chat/{conv}/receipt/{user}``: cumulative, everything up to ``seq`` was delivered or read."""

    seq: int = Field(ge=1)
    status: Literal["delivered", "read"]


class DevicePresencePayload(_Inbound):
    """``presence/{user}/{device}``: published by the device (online) and by its last will (offline)."""

    status: Literal["online", "offline"]
    conn: str = Field(min_length=1, max_length=64)


HISTORY_VIEWS = ("entries", "messages")  # the raw log (for sync) / messages as they stand now
DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = 200
MAX_SEQ = 2**63 - 1  # seqs are signed 64-bit integers in every store (SQLite INTEGER, BSON int64)
MIN_HISTORY_REPLY_BYTES = 1024
DEFAULT_HISTORY_REPLY_BYTES = 64512  # a reply (with its topic) fits a 64 KiB MQTT packet
MAX_HISTORY_REPLY_BYTES = 1024 * 1024


class HistoryRequest(_Inbound):
    """``user/{user}/history/request``: one history page over MQTT, with the HTTP API's cursors."""

    id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS)
    conv: str = Field(min_length=1)  # not an id at all: not_found, as over HTTP
    before: int | None = Field(default=None, ge=1, le=MAX_SEQ)
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    limit: int = Field(default=DEFAULT_HISTORY_LIMIT, ge=1, le=MAX_HISTORY_LIMIT)
    view: Literal["entries", "messages"] = "entries"
    max_bytes: int = Field(default=DEFAULT_HISTORY_REPLY_BYTES, ge=MIN_HISTORY_REPLY_BYTES, le=MAX_HISTORY_REPLY_BYTES)


class SearchRequest(_Inbound):
    """``user/{user}/history/request`` with ``q``: one page of search results over MQTT, with the
    HTTP API's parameters (``GET /v1/search``)."""

    id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS)
    q: str
    conv: str | None = None
    sender: str | None = None
    before: str | None = Field(default=None, max_length=search.MAX_CURSOR_CHARS)
    limit: int = Field(default=search.DEFAULT_SEARCH_LIMIT, ge=1, le=search.MAX_SEARCH_LIMIT)
    max_bytes: int = Field(default=DEFAULT_HISTORY_REPLY_BYTES, ge=MIN_HISTORY_REPLY_BYTES, le=MAX_HISTORY_REPLY_BYTES)


class HistoryErrorCode(enum.StrEnum):
    """Why a history request over MQTT was refused: the HTTP API's codes for the same cases."""

    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class HistoryRequestError(ValueError):
    """A refused history request; carries what could be read of it, to echo in the reply."""

    def __init__(self, code: HistoryErrorCode, message: str, request_id: str = "", conv: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.conv = conv


class PayloadError(ValueError):
    """A payload the contract refuses; carries the error code and, if readable, the client_msg_id."""

    def __init__(self, code: ErrorCode, message: str, client_msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_msg_id = client_msg_id


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


def decode_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(ErrorCode.BAD_PAYLOAD, f"payload is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError(ErrorCode.BAD_PAYLOAD, "payload must be a JSON object")
    return data


def parse_send(
    raw: bytes, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, *, conv: str | None = None
) -> EntryPayload:
    """Validate what a device published on ``chat/{conv}/send/{user}``: a message, or a change by
    its ``kind``. ``conv`` is the topic's conversation: a payload naming another one is refused.
    Raises PayloadError with the client_msg_id when it can be read."""
    try:
        data = decode_json_object(raw)
    except PayloadError as exc:
        exc.client_msg_id = _salvage_client_msg_id(raw)
        raise
    readable_id = _readable_id(data.get("client_msg_id"))
    body = data.get("body")
    if isinstance(body, str) and len(body.encode("utf-8", "surrogatepass")) > max_body_bytes:
        raise PayloadError(
            ErrorCode.TOO_LARGE, f"body exceeds {max_body_bytes} bytes of UTF-8", readable_id
        )
    kind = data.get("kind", EntryKind.MESSAGE.value)
    model = _ENTRY_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        kinds = ", ".join(k.value for k in EntryKind)
        raise PayloadError(ErrorCode.BAD_PAYLOAD, f"kind: must be one of {kinds}", readable_id)
    try:
        payload: EntryPayload = model.model_validate(data)  # type: ignore[assignment]
    except ValidationError as exc:
        raise PayloadError(ErrorCode.BAD_PAYLOAD, _describe(exc), readable_id) from None
    if conv is not None and payload.conv is not None and payload.conv != conv:
        raise PayloadError(
            ErrorCode.WRONG_CONVERSATION,
            f"the payload names conversation {payload.conv!r} but was sent to {conv!r}",
            readable_id,
        )
    if isinstance(payload, SendPayload) and not payload.body.strip() and not payload.attachments:
        raise PayloadError(ErrorCode.EMPTY, "a message needs a body or an attachment", readable_id)
    return payload


def _readable_id(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_MSG_ID_CHARS else None


def _salvage_client_msg_id(raw: bytes) -> str | None:
    """Read the id from JSON spoiled only by bad UTF-8, so the device learns which send failed."""
    try:
        data = orjson.loads(raw.decode("utf-8", "replace"))
    except orjson.JSONDecodeError:
        return None
    return _readable_id(data.get("client_msg_id")) if isinstance(data, dict) else None


def parse_history_request(raw: bytes) -> HistoryRequest | SearchRequest:
    """Validate a history request, or a search request (one with ``q``); the error echoes the
    request's id (and conv) when readable."""
    try:
        data = decode_json_object(raw)
    except PayloadError as exc:
        raise HistoryRequestError(HistoryErrorCode.BAD_REQUEST, exc.message) from None
    request_id = data.get("id") if isinstance(data.get("id"), str) else ""
    request_id = request_id if 0 < len(request_id) <= MAX_REQUEST_ID_CHARS else ""
    conv = data.get("conv") if isinstance(data.get("conv"), str) and is_valid_id(data.get("conv")) else None
    if "q" in data:
        try:
            return SearchRequest.model_validate(data)
        except ValidationError as exc:
            raise HistoryRequestError(HistoryErrorCode.BAD_REQUEST, _describe(exc), request_id, conv) from None
    try:
        request = HistoryRequest.model_validate(data)
    except ValidationError as exc:
        raise HistoryRequestError(HistoryErrorCode.BAD_REQUEST, _describe(exc), request_id, conv) from None
    if request.before is not None and request.after is not None:
        raise HistoryRequestError(HistoryErrorCode.BAD_REQUEST, "use either before or after, not both",
                                  request_id, conv)
    if not is_valid_id(request.conv):
        raise HistoryRequestError(HistoryErrorCode.NOT_FOUND, f"no conversation {request.conv!r}", request_id)
    return request


def parse_typing(raw: bytes) -> TypingPayload:
    """Checked by the broker (typing never reaches the bridge); an invalid one is not relayed."""
    if len(raw) > MAX_TYPING_BYTES:
        raise PayloadError(ErrorCode.TOO_LARGE, f"a typing payload is at most {MAX_TYPING_BYTES} bytes")
    try:
        return TypingPayload.model_validate(decode_json_object(raw))
    except ValidationError as exc:
        raise PayloadError(ErrorCode.BAD_PAYLOAD, _describe(exc)) from None


def parse_receipt(raw: bytes) -> ReceiptPayload:
    try:
        return ReceiptPayload.model_validate(decode_json_object(raw))
    except ValidationError as exc:
        raise PayloadError(ErrorCode.BAD_PAYLOAD, _describe(exc)) from None


def parse_device_presence(raw: bytes) -> DevicePresencePayload:
    try:
        return DevicePresencePayload.model_validate(decode_json_object(raw))
    except ValidationError as exc:
        raise PayloadError(ErrorCode.BAD_PAYLOAD, _describe(exc)) from None


def encode(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def received_ack(client_msg_id: str, conv: str, seq: int, ts: int) -> dict[str, Any]:
    return {"client_msg_id": client_msg_id, "conv": conv, "status": "received", "seq": seq, "ts": ts}


def rejected_ack(client_msg_id: str, conv: str, code: ErrorCode, message: str) -> dict[str, Any]:
    return {
        "client_msg_id": client_msg_id,
        "conv": conv,
        "status": "rejected",
        "error": {"code": code.value, "message": message},
    }


def user_presence(user: str, online: bool, last_seen: int) -> dict[str, Any]:
    return {"user": user, "status": "online" if online else "offline", "last_seen": last_seen}


def receipt(user: str, seq: int, status: str, ts: int) -> dict[str, Any]:
    """``chat/{conv}/receipts``: a member's marker moved forward to ``seq``."""
    return {"user": user, "seq": seq, "status": status, "ts": ts}


def message_notice(conv: str, seq: int, sender: str, ts: int) -> dict[str, Any]:
    """``chat/{conv}/msg`` in fan-out-on-read mode: fetch the body with ``after=seq-1``."""
    return {"conv": conv, "seq": seq, "sender": sender, "ts": ts, "notice": True}


def message_notice_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The notice for a stored entry's payload: a change's notice also says its ``kind``."""
    notice = message_notice(entry["conv"], entry["seq"], entry["sender"], entry["ts"])
    if "kind" in entry:
        notice["kind"] = entry["kind"]
    return notice


def history_page(
    request_id: str, conv: str, messages: list[dict[str, Any]], has_more: bool, last_seq: int, first_seq: int = 1
) -> dict[str, Any]:
    """``user/{user}/history/response``: a page, as ``GET /v1/conversations/{conv}/messages`` has it."""
    return {
        "id": request_id, "conv": conv, "status": "ok", "messages": messages, "has_more": has_more,
        "last_seq": last_seq, "first_seq": first_seq,
    }


def search_results(request_id: str, results: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """``user/{user}/history/response``: a page of search results, as ``GET /v1/search`` has it."""
    return {"id": request_id, "status": "ok", "results": results, "next": next_cursor}


def history_refused(error: HistoryRequestError) -> dict[str, Any]:
    """``user/{user}/history/response``: the request was refused (nothing else follows)."""
    reply: dict[str, Any] = {"id": error.request_id}
    if error.conv is not None:
        reply["conv"] = error.conv
    reply["status"] = "error"
    reply["error"] = {"code": error.code.value, "message": error.message}
    return reply


def fanout_mode(member_count: int, threshold: int) -> str:
    """Fan-out on read above the threshold: pushing every body to every member's session queue
    costs the broker O(members) QoS 1 state per message; a QoS 0 notice and one history read by
    the members who actually look is much cheaper for big rooms."""
    return FANOUT_READ if member_count > threshold else FANOUT_WRITE


class EventKind(enum.StrEnum):
    """``user/{user}/events``: what changed for this user."""

    CONVERSATION_ADDED = "conversation_added"
    CONVERSATION_REMOVED = "conversation_removed"
    CONVERSATION_UPDATED = "conversation_updated"
    RECEIPT_REJECTED = "receipt_rejected"


def conversation_event(event: EventKind, conv: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"event": event.value, "conv": conv, **fields, "ts": ts}


def receipt_rejected(conv: str, code: ErrorCode, message: str, ts: int, **sent: Any) -> dict[str, Any]:
    """The answer to a refused receipt, on the sender's ``user/{user}/events``; ``sent`` echoes
    the readable ``seq``/``status`` so a device can tell which receipt it was."""
    return {
        "event": EventKind.RECEIPT_REJECTED.value,
        "conv": conv,
        **sent,
        "error": {"code": code.value, "message": message},
        "ts": ts,
    }
