"""Offline push settings: a device's push target (``/v1/push/targets``), muting a conversation
(``/v1/conversations/{conv}/mute``) and logging out (``POST /v1/auth/logout``), which also
forgets the device's target. The notifier (notifier/) reads these from the store."""

from __future__ import annotations

from typing import Literal

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api import conversations
from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.conversations import ConvPath, member_conversation
from chatmq.api.errors import ApiError, error_responses
from chatmq.core.ids import ID_PATTERN
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store.base import PushTarget

MAX_TOKEN_CHARS = 4096
MAX_APP_ID_CHARS = 255

bp = APIBlueprint(
    "push",
    __name__,
    url_prefix="/v1/push",
    abp_tags=[Tag(name="push")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)
bp.before_request(require_user)

logout_bp = APIBlueprint(
    "logout", __name__, url_prefix="/v1/auth/logout", abp_tags=[Tag(name="auth")], abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)  # fmt: skip
logout_bp.before_request(require_user)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TargetRequest(_Strict):
    device: str = Field(pattern=f"^{ID_PATTERN}$", description="the device id (as in presence/{user}/{device})")
    platform: Literal["fcm", "apns"]
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="the provider's device token")
    app_id: str | None = Field(default=None, min_length=1, max_length=MAX_APP_ID_CHARS,
                               description="which app the token belongs to, for gateways serving several")
    preview: bool = Field(default=True, description="false: notifications never carry message text")


class TargetOut(BaseModel):
    device: str
    platform: str
    token: str
    app_id: str | None
    preview: bool
    updated_at: int = Field(description="ms since epoch")


class TargetsResponse(BaseModel):
    targets: list[TargetOut]


class DevicePath(BaseModel):
    device: str


class MuteRequest(_Strict):
    until: int | None = Field(default=None, ge=1, description="ms since epoch; null: until unmuted")


class MuteOut(BaseModel):
    conv: str
    muted: bool
    until: int | None = Field(description="ms since epoch, null while muted until unmuted (or not muted)")


class LogoutRequest(_Strict):
    device: str | None = Field(default=None, pattern=f"^{ID_PATTERN}$", description="forget this device's push target")


def _target_out(target: PushTarget) -> dict:
    return {"device": target.device, "platform": target.platform, "token": target.token, "app_id": target.app_id,
            "preview": target.preview, "updated_at": target.updated_at}  # fmt: skip


@bp.post("/targets", responses={201: TargetOut})
def register(body: TargetRequest) -> Response:
    """Register (or replace) this device's push target. A token registered by another device or
    user before moves here: one token, one device."""
    target = PushTarget(current_user(), body.device, body.platform, body.token, body.app_id, body.preview)
    response = jsonify(_target_out(get_context().store.put_push_target(target)))
    response.status_code = 201
    return response


@bp.get("/targets", responses={200: TargetsResponse})
def targets() -> Response:
    """The caller's push targets, ordered by device."""
    return jsonify({"targets": [_target_out(t) for t in get_context().store.push_targets([current_user()])]})


@bp.delete("/targets/<device>", responses={204: None, **error_responses(404)})
def unregister(path: DevicePath) -> Response:
    """Forget one device's push target."""
    if not get_context().store.delete_push_target(current_user(), path.device):
        raise ApiError(404, f"no push target for device {path.device!r}")
    return Response(status=204)


def _mute_out(conv: str, until: int | None) -> dict:
    return {"conv": conv, "muted": until is not None, "until": until or None}


@conversations.bp.get("/<conv>/mute", responses={200: MuteOut, **error_responses(403, 404)})
def get_mute(path: ConvPath) -> Response:
    """Whether the caller muted the conversation's push notifications."""
    conversation = member_conversation(path.conv)
    return jsonify(_mute_out(conversation.id, get_context().store.mute(conversation.id, current_user())))


@conversations.bp.put("/<conv>/mute", responses={200: MuteOut, **error_responses(403, 404)})
def put_mute(path: ConvPath, body: MuteRequest) -> Response:
    """Mute push notifications of the conversation, until a time or until unmuted. Messages
    still arrive over MQTT and in history; only push notifications stop."""
    conversation = member_conversation(path.conv)
    get_context().store.set_mute(conversation.id, current_user(), body.until or 0)
    return jsonify(_mute_out(conversation.id, body.until or 0))


@conversations.bp.delete("/<conv>/mute", responses={204: None, **error_responses(403, 404)})
def delete_mute(path: ConvPath) -> Response:
    """Unmute."""
    conversation = member_conversation(path.conv)
    get_context().store.set_mute(conversation.id, current_user(), None)
    return Response(status=204)


@logout_bp.post("", responses={204: None})
def logout(body: LogoutRequest) -> Response:
    """Revoke the token of this request (over MQTT too) and, with ``device``, forget that device's
    push target so a logged-out phone gets no more notifications."""
    ctx = get_context()
    if body.device is not None:
        ctx.store.delete_push_target(current_user(), body.device)
    TokenRevocations(ctx.redis, ctx.settings.token_ttl_s).revoke_token(g.claims)
    return Response(status=204)
