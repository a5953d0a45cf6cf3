"""``/v1/conversations``: the caller's conversations and each one's message history."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from api.bearer import SECURITY, current_user, require_user
from api.context import get_context
from api.errors import ApiError, error_responses
from chatcore.ids import is_valid_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

bp = APIBlueprint(
    "conversations",
    __name__,
    url_prefix="/v1/conversations",
    abp_tags=[Tag(name="conversations")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)
bp.before_request(require_user)


class ConversationOut(BaseModel):
    id: str
    title: str | None
    members: list[str]
    last_seq: int


class ConversationsResponse(BaseModel):
    conversations: list[ConversationOut]


class MessageOut(BaseModel):
    conv: str
    seq: int
    id: str
    sender: str
    client_msg_id: str
    body: str
    attachments: list[dict[str, object]]
    ts: int = Field(description="ms since epoch, assigned by the server")


class MessagesResponse(BaseModel):
    messages: list[MessageOut] = Field(description="ascending seq")
    has_more: bool = Field(description="older (before / default) or newer (after) messages exist")


class ConvPath(BaseModel):
    conv: str


class HistoryQuery(BaseModel):
    # Unknown parameters are refused: a misspelt ``befor=`` must not silently return the newest page.
    model_config = ConfigDict(extra="forbid")

    before: int | None = Field(default=None, ge=1, description="messages with seq < before (newest first page)")
    after: int | None = Field(default=None, ge=0, description="messages with seq > after (oldest first page)")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


@bp.get("", responses={200: ConversationsResponse})
def list_conversations() -> Response:
    """The conversations the caller belongs to, ordered by id."""
    convs = get_context().store.list_conversations(member=current_user())
    return jsonify(
        {
            "conversations": [
                {"id": c.id, "title": c.title, "members": list(c.members), "last_seq": c.last_seq}
                for c in convs
            ]
        }
    )


@bp.get("/<conv>/messages", responses={200: MessagesResponse, **error_responses(403, 404)})
def history(path: ConvPath, query: HistoryQuery) -> Response:
    """A page of a conversation's messages in ascending seq.

    No bound: the newest limit messages. before: the newest limit older than it (walk back).
    after: the oldest limit newer than it (catch up). Use one of them, not both.
    """
    if query.before is not None and query.after is not None:
        raise ApiError(400, "use either before or after, not both")
    store = get_context().store
    conversation = store.get_conversation(path.conv) if is_valid_id(path.conv) else None
    if conversation is None:
        raise ApiError(404, f"no conversation {path.conv!r}")
    if current_user() not in conversation.members:
        raise ApiError(403, "not a member of this conversation")
    page = store.history(conversation.id, before=query.before, after=query.after, limit=query.limit)
    return jsonify({"messages": [m.to_payload() for m in page.messages], "has_more": page.has_more})
