"""Bearer-token authentication for the protected blueprints.

Installed as a ``before_request`` hook, so an unauthenticated caller gets 401 before any parameter
is looked at (bad parameters never reveal anything to a stranger). The token's signature proves
who the caller is; one store read per request makes disabling a user take effect at once.
"""

from __future__ import annotations

from flask import g, request

from api.context import get_context
from api.errors import ApiError
from chatcore.auth import verify_token

SECURITY = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def require_user() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    ctx = get_context()
    identity = verify_token(ctx.secret, token.strip())
    if identity is None or identity.is_service:
        raise ApiError(401, "invalid or expired token")
    user = ctx.store.get_user(identity.user)
    if user is None or user.disabled:
        raise ApiError(401, "invalid or expired token")
    g.user = identity.user


def current_user() -> str:
    return str(g.user)
