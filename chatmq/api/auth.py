"""``POST /v1/auth/token``: exchange a username and password for a signed, expiring token."""

from __future__ import annotations

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api.context import get_context
from chatmq.api.errors import ApiError, error_responses
from chatmq.core.auth import issue_token
from chatmq.core.logins import log_in

bp = APIBlueprint("auth", __name__, url_prefix="/v1/auth", abp_tags=[Tag(name="auth")])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(max_length=256)
    password: str = Field(max_length=4096)


class TokenResponse(BaseModel):
    token: str
    expires_at: int = Field(description="ms since epoch")


@bp.post("/token", responses={200: TokenResponse, **error_responses(400, 401, 429, 500)})
def issue(body: TokenRequest) -> Response:
    """Issue a bearer token (also accepted as the MQTT password); expires_at is in ms."""
    # A token is not accepted as the password here: otherwise a token could renew itself forever
    # and a leaked one would never expire.
    ctx = get_context()
    login = log_in(ctx.authenticator, ctx.throttle, body.username, body.password, request.remote_addr, tokens=False)
    if login.rate_limited:
        raise ApiError(429, "too many failed logins; try again later", "rate_limited")
    identity = login.identity
    if identity is None or identity.is_service:
        # One answer for unknown user, wrong password and disabled user: nothing to enumerate.
        raise ApiError(401, "invalid username or password", "invalid_credentials")
    issued = issue_token(ctx.secret, identity.user, ctx.settings.token_ttl_s)
    return jsonify({"token": issued.token, "expires_at": issued.expires_at})
