"""``/v1/conversations``: the caller's conversations with read state, each one's history and
every member's receipt markers (the read side; changes are in chatmq/api/manage.py)."""

from __future__ import annotations

from typing import Literal

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.errors import ApiError, error_responses
from chatmq.api.querymodel import QueryModel
from chatmq.core.history import read_page
from chatmq.core.ids import is_valid_id
from chatmq.core.protocol import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, fanout_mode
from chatmq.core.store import Conversation, LogAccess, Marker, Store
from chatmq.core.store.base import MAX_SEQ

DEFAULT_LIMIT = DEFAULT_HISTORY_LIMIT
MAX_LIMIT = MAX_HISTORY_LIMIT
PREVIEW_CHARS = 140
NOT_A_MEMBER = "not a member of this conversation"

bp = APIBlueprint(
    "conversations",
    __name__,
    url_prefix="/v1/conversations",
    abp_tags=[Tag(name="conversations")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)
bp.before_request(require_user)


class PreviewOut(BaseModel):
    seq: int
    sender: str
    body: str = Field(description=f"the first {PREVIEW_CHARS} characters of the body")
    ts: int


class ConversationOut(BaseModel):
    id: str
    title: str | None
    owner: str | None = Field(description="who may add and remove members and rename; null: admins only")
    members: list[str]
    member_count: int
    fanout: str = Field(description="write: full messages on chat/{conv}/msg; read: QoS 0 notices only")
    last_seq: int
    first_seq: int = Field(description="where the retained log starts (seqs below it were purged by retention)")
    delivered_seq: int = Field(description="the caller's delivered marker")
    read_seq: int = Field(description="the caller's read marker")
    unread: int = Field(description="messages after read_seq sent by others")
    last_message: PreviewOut | None


class ConversationsResponse(BaseModel):
    conversations: list[ConversationOut]


class MessageOut(BaseModel):
    """An entry of the log (view=entries) or a message as it stands (view=messages)."""

    conv: str
    seq: int
    id: str
    sender: str
    client_msg_id: str
    body: str
    attachments: list[dict[str, object]]
    ts: int = Field(description="ms since epoch, assigned by the server")
    kind: str | None = Field(default=None, description="entries: edit, delete, react or unreact; absent: a message")
    target: int | None = Field(default=None, description="entries: the seq of the message a change changes")
    emoji: str | None = Field(default=None, description="entries: a reaction's emoji")
    erased: bool | None = Field(default=None, description="entries: true when a deletion erased the content")
    reply_to: int | None = Field(default=None, description="the seq of the message this one replies to")
    edited: dict[str, int] | None = Field(default=None, description="view=messages: the latest edit (seq, ts)")
    deleted: dict[str, object] | None = Field(default=None, description="view=messages: the deletion (seq, by, ts)")
    reactions: list[dict[str, object]] | None = Field(
        default=None, description="view=messages: per emoji, its count and users"
    )


class MessagesResponse(BaseModel):
    messages: list[MessageOut] = Field(description="ascending seq")
    has_more: bool = Field(description="older (before / default) or newer (after) ones exist")
    last_seq: int = Field(description="the conversation's last seq when the page was read: sync on after it")
    first_seq: int = Field(description="where the retained log starts: seqs below it were purged by retention, "
                           "never gaps")


class ConvPath(BaseModel):
    conv: str


class MarkerOut(BaseModel):
    user: str
    delivered_seq: int
    read_seq: int
    updated_at: int = Field(description="ms since epoch of the last forward move; 0 for never")


class ReceiptsResponse(BaseModel):
    receipts: list[MarkerOut] = Field(description="every current member, ordered by user")


def represent(store: Store, conversation: Conversation, user: str, marker: Marker | None, threshold: int) -> dict:
    """A conversation as ``user`` sees it: the one representation every endpoint returns."""
    delivered = marker.delivered_seq if marker else 0
    read = marker.read_seq if marker else 0
    newest = [v.message for v in store.message_view(conversation.id, limit=1).messages] if conversation.last_seq else []
    preview = (
        {"seq": newest[0].seq, "sender": newest[0].sender, "body": newest[0].body[:PREVIEW_CHARS], "ts": newest[0].ts}
        if newest
        else None
    )
    return {
        "id": conversation.id,
        "title": conversation.title,
        "owner": conversation.owner,
        "members": list(conversation.members),
        "member_count": len(conversation.members),
        "fanout": fanout_mode(len(conversation.members), threshold),
        "last_seq": conversation.last_seq,
        "first_seq": conversation.first_seq,
        "delivered_seq": delivered,
        "read_seq": read,
        "unread": store.count_unread(conversation.id, user, read) if conversation.last_seq > read else 0,
        "last_message": preview,
    }


def member_conversation(conv: str) -> Conversation:
    """The conversation in the path, if the caller is a member: else 404 / 403."""
    conversation = get_context().store.get_conversation(conv) if is_valid_id(conv) else None
    if conversation is None:
        raise ApiError(404, f"no conversation {conv!r}")
    if current_user() not in conversation.members:
        raise ApiError(403, NOT_A_MEMBER)
    return conversation


def member_log(conv: str) -> LogAccess:
    """``member_conversation``'s check and answers for a history page, which needs only the log's
    bounds: one read, without the member list."""
    access = get_context().store.log_access(conv, current_user()) if is_valid_id(conv) else None
    if access is None:
        raise ApiError(404, f"no conversation {conv!r}")
    if not access.member:
        raise ApiError(403, NOT_A_MEMBER)
    return access


class HistoryQuery(QueryModel):
    # Unknown parameters are refused: a misspelt ``befor=`` must not silently return the newest page.
    model_config = ConfigDict(extra="forbid")

    before: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="messages with seq < before (newest first)")
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ, description="messages with seq > after (oldest first)")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    view: Literal["entries", "messages"] = Field(
        default="entries", description="entries: the raw log, for sync; messages: messages as they stand now"
    )


@bp.get("", responses={200: ConversationsResponse})
def list_conversations() -> Response:
    """The conversations the caller belongs to, ordered by id, with the caller's read state."""
    ctx = get_context()
    me = current_user()
    markers = ctx.store.markers_of(me)
    threshold = ctx.settings.fanout_read_threshold
    convs = ctx.store.list_conversations(member=me)
    return jsonify({"conversations": [represent(ctx.store, c, me, markers.get(c.id), threshold) for c in convs]})


@bp.get("/<conv>", responses={200: ConversationOut, **error_responses(403, 404)})
def get_conversation(path: ConvPath) -> Response:
    """One conversation, in the list's representation (members only)."""
    ctx = get_context()
    conversation = member_conversation(path.conv)
    marker = ctx.store.markers_of(current_user()).get(conversation.id)
    return jsonify(represent(ctx.store, conversation, current_user(), marker, ctx.settings.fanout_read_threshold))


@bp.get("/<conv>/messages", responses={200: MessagesResponse, **error_responses(403, 404)})
def history(path: ConvPath, query: HistoryQuery) -> Response:
    """A page of a conversation's log in ascending seq.

    No bound: the newest limit entries. before: the newest limit older than it (walk back).
    after: the oldest limit newer than it (catch up). Use one of them, not both. view=messages:
    messages only, as they stand now (edits, deletions and reactions folded in).
    """
    if query.before is not None and query.after is not None:
        raise ApiError(400, "use either before or after, not both")
    page = read_page(get_context().store, member_log(path.conv), query.view, before=query.before, after=query.after,
                     limit=query.limit)
    return jsonify({"messages": page.messages, "has_more": page.has_more, "last_seq": page.last_seq,
                    "first_seq": page.first_seq})


@bp.get("/<conv>/receipts", responses={200: ReceiptsResponse, **error_responses(403, 404)})
def receipts(path: ConvPath) -> Response:
    """Every member's delivered and read markers (0 for a member who never sent a receipt)."""
    conversation = member_conversation(path.conv)
    stored = {m.user: m for m in get_context().store.markers(conversation.id)}
    rows = [stored.get(user) or Marker(conversation.id, user) for user in conversation.members]
    return jsonify(
        {
            "receipts": [
                {"user": m.user, "delivered_seq": m.delivered_seq, "read_seq": m.read_seq, "updated_at": m.updated_at}
                for m in rows
            ]
        }
    )
