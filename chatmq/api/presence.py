"""``GET /v1/presence/{user}``: a user's aggregate online state, for those allowed to see it.

The rule is the MQTT one (chatmq.core.access): yourself, or someone you share a conversation with.
"""

from __future__ import annotations

import time

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.errors import ApiError, error_responses
from chatmq.core.ids import is_valid_id

bp = APIBlueprint(
    "presence",
    __name__,
    url_prefix="/v1/presence",
    abp_tags=[Tag(name="presence")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 403, 404, 500),
)
bp.before_request(require_user)


class UserPath(BaseModel):
    user: str


class PresenceResponse(BaseModel):
    user: str
    status: str = Field(description="online | offline")
    last_seen: int = Field(description="ms since epoch; 0 if never seen")


@bp.get("/<user>", responses={200: PresenceResponse})
def get_presence(path: UserPath) -> Response:
    """A user's presence: online while any of their devices is."""
    ctx = get_context()
    me = current_user()
    if not is_valid_id(path.user) or ctx.store.get_user(path.user) is None:
        raise ApiError(404, f"no user {path.user!r}")
    if path.user != me and not share_conversation(me, path.user):
        raise ApiError(403, "presence is visible to users sharing a conversation")
    now_ms = int(time.time() * 1000)
    return jsonify(ctx.presence.get(path.user, now_ms).to_payload())


def share_conversation(me: str, other: str) -> bool:
    return any(other in conv.members for conv in get_context().store.list_conversations(member=me))
