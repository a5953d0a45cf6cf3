"""Credentials: argon2id password hashes and signed, expiring API tokens.

A device logs in to MQTT with its user id and either its password or a token; the API issues the
tokens. Tokens are HMAC-signed JWTs so any process holding the key checks one in microseconds,
without a store round trip (password checks cost ~50-100 ms of CPU by design).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatmq.core.access import Identity
from chatmq.core.config import ADMIN_USER, SERVICE_USER
from chatmq.core.store.base import AlreadyExists, NotFound, Store, User

if TYPE_CHECKING:
    from chatmq.core.credcache import VerifiedPasswords
    from chatmq.core.identity import ExternalTokens
    from chatmq.core.revocation import RevocationMemory, TokenRevocations

log = logging.getLogger(__name__)

EXTERNAL_CLAIM = "ext"  # marks the claims of an identity provider's token (chatmq.core.identity)
_hasher = PasswordHasher()
_ALGORITHM = "HS256"
_TOKEN_PREFIX = "eyJ"  # every compact JWT starts with a base64url '{"'


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def _stand_in_hash() -> str:
    """A hash of nothing anyone knows, with the current parameters: checked for a user who has no
    usable password, so every refused password login costs one argon2 check."""
    return _hasher.hash(secrets.token_urlsafe(32))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: int  # ms since epoch


def issue_token(
    secret: str, user: str, ttl_s: int, *, service: bool = False, admin: bool = False
) -> IssuedToken:
    """``jti`` names the token (one token can be revoked); ``ims`` is the issue time in ms, so a
    "tokens issued before T are revoked" mark is exact (``iat`` has whole seconds only)."""
    now_ms = int(time.time() * 1000)
    now = now_ms // 1000
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl_s, "ims": now_ms,
                              "jti": secrets.token_urlsafe(12)}
    if service:
        claims["svc"] = True
    if admin:
        claims["adm"] = True
    return IssuedToken(jwt.encode(claims, secret, algorithm=_ALGORITHM), (now + ttl_s) * 1000)


def token_claims(secret: str, token: str) -> dict[str, Any] | None:
    """The verified claims of a token, or None if it is forged, malformed or expired."""
    try:
        return jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError:
        return None


def claims_identity(claims: dict[str, Any]) -> Identity:
    return Identity(user=str(claims["sub"]), is_service=bool(claims.get("svc")), is_admin=bool(claims.get("adm")))


def verify_token(secret: str, token: str) -> Identity | None:
    claims = token_claims(secret, token)
    return None if claims is None else claims_identity(claims)


def looks_like_token(secret_or_password: str) -> bool:
    return secret_or_password.startswith(_TOKEN_PREFIX) and secret_or_password.count(".") == 2


class Authenticator:
    """Checks a (username, password-or-token) pair against the store. Blocking: run it in a thread.

    The one login path: chatmq's broker's login hook, the EMQX hook and the API call it. The
    password field holds a password, a chatmq token, or (with ``external``) a token of the app's
    identity provider (chatmq.core.identity); a token's user must be the username, exist (or be
    created on first login when the deployment says so) and not be disabled.

    With ``revocations`` a token is also checked against the revocation marks in Redis
    (chatmq.core.revocation); an error reaching Redis refuses the token rather than ignore a revoke.
    With ``verified`` a password that matched the user's current hash moments ago is accepted
    without another argon2 check (chatmq.core.credcache says why that is safe).
    """

    def __init__(
        self, store: Store, secret: str, revocations: TokenRevocations | RevocationMemory | None = None,
        verified: VerifiedPasswords | None = None, external: ExternalTokens | None = None,
    ) -> None:  # fmt: skip
        self._store = store
        self._secret = secret
        self._revocations = revocations
        self._verified = verified
        self._external = external

    def authenticate(self, username: str | None, password: str | None) -> Identity | None:
        if not username or not password:
            return None
        if looks_like_token(password):
            claims = self.token_claims(password)
            if claims is None:
                return None
            identity = claims_identity(claims)
            if identity.user != username:
                return None
            if identity.is_service:
                return identity if username == SERVICE_USER else None
            if identity.is_admin:
                return identity if username == ADMIN_USER else None
            if self._revocations is not None and self._revocations.is_revoked(claims):
                return None
            return identity if self.user_active(claims) else None
        if username in (SERVICE_USER, ADMIN_USER):
            return None
        # Every refusal costs one argon2 check, like a wrong password: how long a refusal took must
        # not tell whether the user exists, is disabled or has no password (external tokens only).
        user = self._store.get_user(username)
        if user is None or not user.password_hash:
            verify_password(_stand_in_hash(), password)
            return None
        if user.disabled:
            verify_password(user.password_hash, password)  # never the cache: full cost
            return None
        if not self._password_matches(user.id, user.password_hash, password):
            return None
        return Identity(user=username)

    def token_claims(self, token: str) -> dict[str, Any] | None:
        """The verified claims of a chatmq token, or of an identity provider's token when one is
        configured; None if forged, malformed, expired or (external) of the wrong issuer/audience."""
        if self._external is not None and self._external.handles(token):
            return self._external.claims(token)
        return token_claims(self._secret, token)

    def user_active(self, claims: dict[str, Any]) -> bool:
        """The verified token's user exists and is not disabled. A user the identity provider
        vouches for but this store does not know is created first, when the deployment says so;
        a known one takes the token's display name when the deployment syncs names."""
        user = self._store.get_user(str(claims["sub"]))
        external = self._external if claims.get(EXTERNAL_CLAIM) else None
        if user is None and external is not None and external.create_users:
            user = self._create_on_first_login(claims)
        elif user is not None and not user.disabled and external is not None and external.sync_names:
            self._sync_name(user, claims.get("name"))
        return user is not None and not user.disabled

    def _sync_name(self, user: User, name: str | None) -> None:
        """The identity provider's name for the user, when its token carries one that differs."""
        if not name or name == user.display_name:
            return
        try:
            self._store.set_profile(user.id, name, user.avatar)
        except NotFound:  # erased meanwhile: the login is refused by whoever reads it next
            return
        log.info("display name of %s updated from the identity provider's token", user.id)

    def _create_on_first_login(self, claims: dict[str, Any]) -> User | None:
        user_id = str(claims["sub"])
        try:  # no password: this user logs in with the identity provider's tokens only
            user = self._store.create_user(user_id, "", display_name=claims.get("name"))
        except AlreadyExists:  # another login of the same new user won the race
            return self._store.get_user(user_id)
        log.info("created user %s on first login with an identity provider token", user_id)
        return user

    def _password_matches(self, user: str, password_hash: str, password: str) -> bool:
        verified = self._verified
        if verified is not None and verified.matches(user, password_hash, password):
            return True
        if not verify_password(password_hash, password):
            return False
        if verified is not None:
            verified.remember(user, password_hash, password)
        return True

