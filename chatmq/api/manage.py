"""Conversation management: create, add and remove members, rename.

Rules: the creator is a member and the owner; the owner adds and removes members and renames;
any member may remove itself (leave). A conversation created by an admin (CLI) has no owner and
is managed by admins only. Members learn of every change on ``user/{user}/events``: the store
records the event with the change and the bridge publishes it (see chatmq/bridge/events.py), so this
module needs no broker connection.
"""

from __future__ import annotations

import logging
import uuid

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api import conversations
from chatmq.api.bearer import current_user
from chatmq.api.context import get_context
from chatmq.api.conversations import ConversationOut, ConvPath, member_conversation, represent
from chatmq.api.errors import ApiError, error_responses
from chatmq.core.ids import DOTTED_ID, ID_PATTERN, dotted_conversation_id, is_valid_id
from chatmq.core.membershipsync import wait_applied
from chatmq.core.store import AlreadyExists, Conversation, NotFound

log = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
MAX_MEMBERS_PER_REQUEST = 5000

# The read side's blueprint, extended: OpenAPI paths are per blueprint, and two blueprints on one
# prefix would overwrite each other's operations on /v1/conversations.
bp = conversations.bp


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateRequest(_Strict):
    members: list[str] = Field(max_length=MAX_MEMBERS_PER_REQUEST, description="the others; the caller is added")
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    id: str | None = Field(default=None, pattern=f"^{ID_PATTERN}$", description="default: a new random id")


class AddMemberRequest(_Strict):
    user: str


class PatchRequest(_Strict):
    title: str | None = Field(max_length=MAX_TITLE_CHARS, description="null removes the title")


class MemberPath(BaseModel):
    conv: str
    user: str


def _respond(conversation: Conversation, status: int = 200) -> Response:
    ctx = get_context()
    me = current_user()
    marker = ctx.store.markers_of(me).get(conversation.id)
    response = jsonify(represent(ctx.store, conversation, me, marker, ctx.settings.fanout_read_threshold))
    response.status_code = status
    return response


def _reload(conv: str) -> Conversation:
    conversation = get_context().store.get_conversation(conv)
    if conversation is None:  # pragma: no cover - conversations are never deleted
        raise ApiError(404, f"no conversation {conv!r}")
    return conversation


def _require_owner(conversation: Conversation, what: str) -> None:
    if conversation.owner != current_user():
        raise ApiError(403, f"only the conversation's owner may {what}")


def _require_users(users: list[str]) -> None:
    store = get_context().store
    for user in users:
        if not is_valid_id(user) or store.get_user(user) is None:
            raise ApiError(400, f"no user {user!r}")


@bp.post("", responses={201: ConversationOut, **error_responses(409)})
def create(body: CreateRequest) -> Response:
    """Create a conversation; the caller becomes a member and its owner."""
    me = current_user()
    _require_users(body.members)
    conv_id = body.id or uuid.uuid4().hex[:20]
    problem = None if get_context().settings.dotted_conversation_ids else dotted_conversation_id(conv_id)
    if problem is not None:
        raise ApiError(400, problem, DOTTED_ID)
    try:
        conversation = get_context().store.create_conversation(conv_id, [me, *body.members], body.title, owner=me)
    except AlreadyExists:
        raise ApiError(409, f"conversation {conv_id!r} already exists", "conflict") from None
    except NotFound as exc:  # a user deleted between the check and the write
        raise ApiError(400, str(exc)) from None
    return _respond(conversation, 201)


@bp.post("/<conv>/members", responses={200: ConversationOut, **error_responses(403, 404, 409)})
def add_member(path: ConvPath, body: AddMemberRequest) -> Response:
    """Add a member (owner only). 409 if already a member."""
    conversation = member_conversation(path.conv)
    _require_owner(conversation, "add members")
    _require_users([body.user])
    if body.user in conversation.members:
        raise ApiError(409, f"{body.user!r} is already a member", "conflict")
    get_context().store.add_member(conversation.id, body.user)
    _applied_by_brokers()
    return _respond(_reload(conversation.id))


@bp.delete("/<conv>/members/<user>", responses={204: None, **error_responses(403, 404)})
def remove_member(path: MemberPath) -> Response:
    """Remove a member: the owner removes anyone, a member removes itself (leaves).

    The removed user loses history access at once, and on chatmq's broker every live delivery
    (messages, receipts, typing) before this answer is sent."""
    conversation = member_conversation(path.conv)
    me = current_user()
    if path.user != me:
        _require_owner(conversation, "remove other members")
    if path.user not in conversation.members:
        raise ApiError(404, f"{path.user!r} is not a member")
    get_context().store.remove_member(conversation.id, path.user)
    _applied_by_brokers()
    return Response(status=204)


def _applied_by_brokers() -> None:
    """Answer once every live broker enforces the change (chatmq.core.membershipsync), so nothing a
    device relays after this answer (typing) reaches a removed member; bounded by
    CHATMQ_MEMBERSHIP_APPLY_TIMEOUT_S. Redis unreachable: logged, the brokers' poll catches up."""
    ctx = get_context()
    wait_applied(ctx.redis, ctx.store.membership_version, ctx.settings.membership_apply_timeout_s)


@bp.patch("/<conv>", responses={200: ConversationOut, **error_responses(403, 404)})
def patch(path: ConvPath, body: PatchRequest) -> Response:
    """Rename (owner only)."""
    conversation = member_conversation(path.conv)
    _require_owner(conversation, "rename it")
    get_context().store.set_title(conversation.id, body.title)
    return _respond(_reload(conversation.id))
