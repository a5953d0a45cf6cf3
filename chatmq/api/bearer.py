"""Bearer-token authentication for the protected blueprints.

Installed as a ``before_request`` hook, so an unauthenticated caller gets 401 before any parameter
is looked at (bad parameters never reveal anything to a stranger). The token's signature proves
who the caller is; one store read per request makes disabling a user take effect at once.

A device sends the same token with every request, and checking its signature (base64, JSON, HMAC)
costs ~0.04 ms of CPU each time (bench/history.py). So each worker remembers the claims of the
tokens it verified, keyed by the exact token text and the key: a hit is the very string that
passed the check, and its expiry is still checked on every use. Revocation and disabled users are
never cached: both are checked on every request, as before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from flask import g, request

from chatmq.api.context import ApiContext, get_context
from chatmq.api.errors import ApiError
from chatmq.core.auth import claims_identity

SECURITY = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
MAX_VERIFIED_TOKENS = 10_000  # per worker; emptied when full (a few MB at most)

_verified: dict[tuple[str, str], dict[str, Any]] = {}
_verified_lock = threading.Lock()


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


def require_user() -> None:
    """A user's token: chatmq's own, or the identity provider's (chatmq.core.identity)."""
    ctx = get_context()
    claims = verified_claims(ctx, bearer_token())
    identity = None if claims is None else claims_identity(claims)
    if claims is None or identity is None or identity.is_service or identity.is_admin:
        raise ApiError(401, "invalid or expired token")
    if revoked(ctx, claims):
        raise ApiError(401, "invalid or expired token")
    if not ctx.authenticator.user_active(claims):  # unknown or disabled (or created on first login)
        raise ApiError(401, "invalid or expired token")
    g.user = identity.user
    g.claims = claims  # e.g. to revoke this very token (POST /v1/auth/logout)


def verified_claims(ctx: ApiContext, token: str) -> dict[str, Any] | None:
    """The token's verified claims, remembered per worker until the token expires. The dict is
    shared: read only."""
    key = (ctx.secret, token)
    claims = _verified.get(key)
    if claims is not None and time.time() < claims["exp"]:  # PyJWT's own rule: expired once exp <= now
        return claims
    claims = ctx.authenticator.token_claims(token)
    if claims is not None:
        with _verified_lock:
            if len(_verified) >= MAX_VERIFIED_TOKENS:
                _verified.clear()
            _verified[key] = claims
    return claims


def current_user() -> str:
    return str(g.user)


def revoked(ctx: ApiContext, claims: dict[str, Any]) -> bool:
    """Revocation marks live in Redis; if Redis cannot answer, the token is refused (fail closed)."""
    try:
        return ctx.revocations.is_revoked(claims)
    except redis.RedisError as exc:
        raise ApiError(503, f"cannot check token revocation: {type(exc).__name__}") from None
