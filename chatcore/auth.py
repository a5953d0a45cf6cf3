"""Credentials: argon2id password hashes and signed, expiring API tokens.

A device logs in to MQTT with its user id and either its password or a token; the API issues the
tokens. Tokens are HMAC-signed JWTs so any process holding the key checks one in microseconds,
without a store round trip (password checks cost ~50-100 ms of CPU by design).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatcore.access import Identity
from chatcore.config import SERVICE_USER
from chatcore.store.base import Store

_hasher = PasswordHasher()
_ALGORITHM = "HS256"
_TOKEN_PREFIX = "eyJ"  # every compact JWT starts with a base64url '{"'


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: int  # ms since epoch


def issue_token(secret: str, user: str, ttl_s: int, *, service: bool = False) -> IssuedToken:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl_s}
    if service:
        claims["svc"] = True
    return IssuedToken(jwt.encode(claims, secret, algorithm=_ALGORITHM), (now + ttl_s) * 1000)


def verify_token(secret: str, token: str) -> Identity | None:
    try:
        claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError:
        return None
    return Identity(user=str(claims["sub"]), is_service=bool(claims.get("svc")))


def looks_like_token(secret_or_password: str) -> bool:
    return secret_or_password.startswith(_TOKEN_PREFIX) and secret_or_password.count(".") == 2


class Authenticator:
    """Checks a (username, password-or-token) pair against the store. Blocking: run it in a thread."""

    def __init__(self, store: Store, secret: str) -> None:
        self._store = store
        self._secret = secret

    def authenticate(self, username: str | None, password: str | None) -> Identity | None:
        if not username or not password:
            return None
        if looks_like_token(password):
            identity = verify_token(self._secret, password)
            if identity is None or identity.user != username:
                return None
            if identity.is_service:
                return identity if username == SERVICE_USER else None
            return identity if self._user_active(username) else None
        if username == SERVICE_USER:
            return None
        user = self._store.get_user(username)
        if user is None or user.disabled or not verify_password(user.password_hash, password):
            return None
        return Identity(user=username)

    def _user_active(self, username: str) -> bool:
        user = self._store.get_user(username)
        return user is not None and not user.disabled
