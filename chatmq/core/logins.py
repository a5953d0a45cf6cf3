"""The one login path of every broker and of the API: the failed-login throttle, then the credentials.

chatmq's broker's login hook, the EMQX authentication hook and ``POST /v1/auth/token`` all call
``log_in``, so a revoked token, a disabled user or a throttled address is refused the same way
whichever door a client knocks on. Blocking (store, Redis, argon2): run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chatmq.core.access import Identity
from chatmq.core.auth import Authenticator, looks_like_token


class Throttle(Protocol):
    """chatmq.core.ratelimit.LoginThrottle: failed logins per user and per address."""

    def blocked(self, user: str | None, address: str | None) -> bool: ...
    def failed(self, user: str | None, address: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Login:
    identity: Identity | None  # None: refused
    rate_limited: bool = False  # refused without a check: too many failed logins lately


def log_in(
    authenticator: Authenticator, throttle: Throttle | None, username: str | None, password: str | None,
    address: str | None, *, tokens: bool = True,
) -> Login:  # fmt: skip
    """Over the throttle's limit every attempt is refused, a right password included; every other
    refusal counts as a failed login. ``tokens=False`` refuses a token given as the password (the
    API's token endpoint: a token must not renew itself)."""
    if throttle is not None and throttle.blocked(username, address):
        return Login(None, rate_limited=True)
    identity = None
    if tokens or not looks_like_token(password or ""):
        identity = authenticator.authenticate(username, password)
    if identity is None and throttle is not None and (username or password):
        throttle.failed(username, address)
    return Login(identity)
