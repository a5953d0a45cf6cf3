"""Token revocation, kept in Redis next to presence (tokens themselves stay stateless JWTs).

Two marks, both read with one MGET per token check:

- ``chatmq:{user}:revoked:{jti}``: one token, set with a TTL equal to the token's remaining lifetime
  (after that the token is expired anyway, so the set never grows without bound);
- ``chatmq:{user}:tokens-after``: every token of a user issued before this ms time is revoked
  ("sign out everywhere"); it expires after the longest token lifetime the deployment issues.

Every change is also published on ``AUTH_CHANGED_CHANNEL`` with the user id, so the broker
re-checks that user's live connections at once instead of waiting for them to reconnect.
"""

from __future__ import annotations

import time
from typing import Any

import redis

# Both keys of a user share the ``{user}`` hash tag: one MGET works on a Redis Cluster too.


def revoked_key(user: str, jti: str) -> str:
    return f"chatmq:{{{user}}}:revoked:{jti}"


def tokens_after_key(user: str) -> str:
    return f"chatmq:{{{user}}}:tokens-after"

AUTH_CHANGED_CHANNEL = "chatmq:auth-changed"


def _now_ms() -> int:
    return int(time.time() * 1000)


class TokenRevocations:
    def __init__(self, client: redis.Redis, max_token_ttl_s: int) -> None:
        self._redis = client
        self._max_ttl_s = max(1, max_token_ttl_s)

    def revoke_token(self, claims: dict[str, Any]) -> bool:
        """Revoke one token (by its verified claims). False if it has no jti or already expired."""
        jti, exp = claims.get("jti"), int(claims.get("exp", 0))
        left_s = exp - int(time.time())
        if not isinstance(jti, str) or left_s <= 0:
            return False
        self._redis.set(revoked_key(str(claims["sub"]), jti), "1", ex=left_s + 1)
        self.notify(str(claims["sub"]))
        return True

    def revoke_user(self, user: str) -> int:
        """Revoke every token of ``user`` issued until now; returns the mark (ms)."""
        mark = _now_ms()
        self._redis.set(tokens_after_key(user), str(mark), ex=self._max_ttl_s + 1)
        self.notify(user)
        return mark

    def notify(self, user: str) -> int:
        """Tell every broker to re-check ``user``'s live connections; returns how many listened."""
        return int(self._redis.publish(AUTH_CHANGED_CHANNEL, user))  # type: ignore[arg-type]

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        jti = claims.get("jti")
        user = str(claims["sub"])
        keys = [tokens_after_key(user)]
        if isinstance(jti, str):
            keys.append(revoked_key(user, jti))
        values = self._redis.mget(keys)
        if len(values) > 1 and values[1] is not None:
            return True
        after = values[0]
        if after is None:
            return False
        issued_ms = int(claims.get("ims") or int(claims.get("iat", 0)) * 1000)
        return issued_ms <= int(after)
