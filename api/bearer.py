"""Bearer-token authentication for the protected blueprints.

Installed as a ``before_request`` hook, so an unauthenticated caller gets 401 before any parameter
is looked at (bad parameters never reveal anything to a stranger). The token's signature proves
who the caller is; one store read per request makes disabling a user take effect at once.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import g, request

from api.context import ApiContext, get_context
from api.errors import ApiError
from chatcore.auth import claims_identity, token_claims
from chatcore.revocation import TokenRevocations

SECURITY = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def require_user() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    ctx = get_context()
    claims = token_claims(ctx.secret, token.strip())
    identity = None if claims is None else claims_identity(claims)
    if claims is None or identity is None or identity.is_service or identity.is_admin:
        raise ApiError(401, "invalid or expired token")
    if revoked(ctx, claims):
        raise ApiError(401, "invalid or expired token")
    user = ctx.store.get_user(identity.user)
    if user is None or user.disabled:
        raise ApiError(401, "invalid or expired token")
    g.user = identity.user


def current_user() -> str:
    return str(g.user)


def revoked(ctx: ApiContext, claims: dict[str, Any]) -> bool:
    """Revocation marks live in Redis; if Redis cannot answer, the token is refused (fail closed)."""
    try:
        return TokenRevocations(ctx.redis, ctx.settings.token_ttl_s).is_revoked(claims)
    except redis.RedisError as exc:
        raise ApiError(503, f"cannot check token revocation: {type(exc).__name__}") from None
