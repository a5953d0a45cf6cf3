"""Tokens issued by the app's own identity provider (external identity).

An app that adds chat already logs its users in. Its identity provider signs JWTs with a private
key and publishes the public keys as a JWKS document (or the operator configures one public key);
chatmq verifies those tokens wherever it accepts its own: as the MQTT password and as the HTTP
bearer token. This module only answers "is this token good, and whose is it"; what follows (the
user must exist or is created on first login, must not be disabled, the token must not be revoked)
is chatmq.core.auth.Authenticator's, the one login path every broker and the API call.

- Only asymmetric algorithms (RS256, ES256, EdDSA by default): the HS256 tokens chatmq signs
  itself never reach this verifier, and a token's ``alg`` must match its key's type, so a public
  key can never be used as an HMAC secret.
- Issuer, audience and expiry are required and checked; ``nbf`` and ``iat`` when present, with
  ``leeway_s`` of clock skew. Which claim is the user id is configurable (``sub`` by default); its
  value must be a valid chatmq id.
- JWKS keys are fetched by PyJWKClient and cached here by ``kid``. The set is re-read every
  ``refresh_s``, and at once (at most every ``min_refetch_s``) when a token names a kid the cache
  does not know: a rotated key is picked up on its first use, while a flood of tokens with made-up
  kids costs the identity provider one request per ``min_refetch_s``. When the JWKS URL cannot be
  reached, the keys already known keep working (stale, logged once per outage) and only unknown
  kids are refused: an identity provider outage does not take logins down.

The verified claims are returned in the shape chatmq's own tokens have (``sub`` is the user id,
``ims`` the issue time in ms, ``ext`` marks them external), so revocation (chatmq.core.revocation),
the API's token cache and the identity helpers of chatmq.core.auth treat both kinds alike.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWKClient

from chatmq.core.auth import EXTERNAL_CLAIM
from chatmq.core.config import Settings
from chatmq.core.ids import is_valid_id
from chatmq.core.profiles import MAX_DISPLAY_NAME_CHARS, clean_display_name

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = ("RS256", "ES256", "EdDSA")


@dataclass(frozen=True, slots=True)
class ExternalIdentityConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key_pem: str | None = None  # exactly one of jwks_url / public_key_pem
    algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS
    user_claim: str = "sub"
    name_claim: str | None = "name"  # the display name of a user created on first login
    create_users: bool = False
    sync_names: bool = False  # and of a known user on every login, when the claim differs
    leeway_s: float = 30.0
    refresh_s: float = 300.0
    min_refetch_s: float = 10.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if (self.jwks_url is None) == (self.public_key_pem is None):
            raise ValueError("external identity needs exactly one of a JWKS URL or a public key")
        if not self.issuer or not self.audience:
            raise ValueError("external identity needs the issuer and the audience to check")
        unknown = set(self.algorithms) - set(SUPPORTED_ALGORITHMS)
        if unknown or not self.algorithms:
            raise ValueError(f"algorithms must be some of {', '.join(SUPPORTED_ALGORITHMS)} (got {sorted(unknown)})")

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalIdentityConfig | None:
        """None when no identity provider is configured (CHATMQ_IDP_JWKS_URL / CHATMQ_IDP_PUBLIC_KEY);
        ValueError naming the setting when one is configured incompletely."""
        if not settings.idp_jwks_url and not settings.idp_public_key:
            return None
        if not settings.idp_issuer or not settings.idp_audience:
            raise ValueError("CHATMQ_IDP_ISSUER and CHATMQ_IDP_AUDIENCE must be set with an identity provider")
        return cls(
            issuer=settings.idp_issuer,
            audience=settings.idp_audience,
            jwks_url=settings.idp_jwks_url or None,
            public_key_pem=_pem(settings.idp_public_key) if settings.idp_public_key else None,
            algorithms=tuple(a.strip() for a in settings.idp_algorithms.split(",") if a.strip()),
            user_claim=settings.idp_user_claim,
            name_claim=settings.idp_name_claim or None,
            create_users=settings.idp_create_users,
            sync_names=settings.idp_sync_names,
            leeway_s=settings.idp_leeway_s,
            refresh_s=settings.idp_jwks_refresh_s,
            min_refetch_s=settings.idp_jwks_min_refetch_s,
            timeout_s=settings.idp_jwks_timeout_s,
        )


def _pem(value: str) -> str:
    """The setting holds the PEM text itself, or the path of a PEM file."""
    return value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()


class KeySource(Protocol):
    def key(self, kid: str | None) -> PyJWK | None:
        """The verification key a token's ``kid`` names, or None if there is none."""


def _algorithm_of(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported public key type {type(public_key).__name__} (RSA, EC P-256 or Ed25519)")


class StaticKey:
    """One configured public key: every token is checked against it, whatever its kid."""

    def __init__(self, pem: str) -> None:
        public_key = load_pem_public_key(pem.encode())
        algorithm = _algorithm_of(public_key)
        self._jwk = PyJWK.from_dict(jwt.get_algorithm_by_name(algorithm).to_jwk(public_key, as_dict=True),
                                    algorithm=algorithm)

    def key(self, kid: str | None) -> PyJWK | None:
        return self._jwk


class JwksKeys:
    """The signing keys of a JWKS URL, cached by kid; thread-safe (logins verify on thread pools)."""

    def __init__(
        self, url: str, *, refresh_s: float = 300.0, min_refetch_s: float = 10.0, timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        # PyJWKClient fetches (http(s) only, no redirects) and parses; its own cache is off because
        # it drops every key when a refresh fails, and the cache policy here must not.
        self._client = PyJWKClient(url, cache_jwk_set=False, cache_keys=False, timeout=timeout_s,
                                   headers={"User-Agent": "chatmq"})
        self.url = url
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._failing = False
        self._lock = threading.Lock()  # one fetch at a time

    @property
    def known_kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key(self, kid: str | None) -> PyJWK | None:
        if not isinstance(kid, str) or not kid:
            return None
        known = self._keys.get(kid)
        if known is not None:
            if self._is_stale() and self._lock.acquire(blocking=False):  # others go on with the known key
                try:
                    self._refresh_if_due()
                finally:
                    self._lock.release()
            return self._keys.get(kid)  # a refresh that no longer lists the kid retires the key
        with self._lock:  # an unknown kid: a rotation this cache has not seen yet, or a forgery
            if kid not in self._keys:
                self._refresh_if_due()
        return self._keys.get(kid)

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._refresh_s

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if self._attempted_at is not None and now - self._attempted_at < self._min_refetch_s:
            return
        self._attempted_at = now
        try:
            jwk_set = self._client.get_jwk_set(refresh=True)
        except Exception as exc:  # unreachable, not JSON, no usable key: keep what is known
            if not self._failing:
                log.warning("JWKS %s unavailable (%s); %d known key(s) stay in use", self.url, exc, len(self._keys))
            self._failing = True
            return
        keys = {k.key_id: k for k in jwk_set.keys if k.key_id and k.public_key_use in ("sig", None)}
        if self._failing or set(keys) != set(self._keys):
            log.info("JWKS %s: %d signing key(s) %s", self.url, len(keys), sorted(keys))
        self._keys = keys
        self._fetched_at = now
        self._failing = False


class ExternalTokens:
    """Verifies the identity provider's tokens; see the module docstring for the rules."""

    def __init__(self, config: ExternalIdentityConfig, keys: KeySource) -> None:
        self.config = config
        self._keys = keys
        self._algorithms = frozenset(config.algorithms)

    @classmethod
    def from_config(cls, config: ExternalIdentityConfig) -> ExternalTokens:
        keys: KeySource
        if config.jwks_url is not None:
            keys = JwksKeys(config.jwks_url, refresh_s=config.refresh_s, min_refetch_s=config.min_refetch_s,
                            timeout_s=config.timeout_s)
        else:
            keys = StaticKey(config.public_key_pem or "")
        return cls(config, keys)

    @property
    def create_users(self) -> bool:
        return self.config.create_users

    @property
    def sync_names(self) -> bool:
        return self.config.sync_names

    def handles(self, token: str) -> bool:
        """True for a token signed with one of the configured algorithms (never chatmq's HS256)."""
        try:
            return jwt.get_unverified_header(token).get("alg") in self._algorithms
        except jwt.PyJWTError:
            return False

    def claims(self, token: str) -> dict[str, Any] | None:
        """The normalised claims of a good token; None (and one log line saying why) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        algorithm, kid = header.get("alg"), header.get("kid")
        key = self._keys.key(kid)
        if key is None:
            log.info("refused identity provider token: no key for kid %r", kid)
            return None
        if algorithm not in self._algorithms or algorithm != key.algorithm_name:
            log.info("refused identity provider token: alg %r does not fit key %r (%s)", algorithm, kid,
                     key.algorithm_name)
            return None
        config = self.config
        try:
            raw = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=config.audience, issuer=config.issuer,
                leeway=config.leeway_s, options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            log.info("refused identity provider token: %s", exc)
            return None
        user = raw.get(config.user_claim)
        if not is_valid_id(user):
            log.info("refused identity provider token: claim %r is not a valid user id", config.user_claim)
            return None
        return normalise(raw, str(user), config.name_claim)


def normalise(raw: dict[str, Any], user: str, name_claim: str | None) -> dict[str, Any]:
    """The claims in chatmq's token shape (chatmq.core.auth): what revocation and the caches read."""
    claims: dict[str, Any] = {"sub": user, "exp": int(raw["exp"]), EXTERNAL_CLAIM: True}
    iat = raw.get("iat")
    if isinstance(iat, int | float):
        claims["iat"] = int(iat)
        claims["ims"] = int(iat * 1000)
    if isinstance(raw.get("jti"), str):
        claims["jti"] = raw["jti"]
    name = raw.get(name_claim) if name_claim else None
    if isinstance(name, str):
        with contextlib.suppress(ValueError):  # an unusable name is no reason to refuse the login
            claims["name"] = clean_display_name(name.strip()[:MAX_DISPLAY_NAME_CHARS])
    return claims


def external_tokens(settings: Settings) -> ExternalTokens | None:
    """The deployment's identity provider verifier, or None when none is configured."""
    config = ExternalIdentityConfig.from_settings(settings)
    return None if config is None else ExternalTokens.from_config(config)
