"""Token revocation, kept in Redis next to presence (tokens themselves stay stateless JWTs).

Two marks, both read with one MGET per token check:

- ``chatmq:{user}:revoked:{jti}``: one token, set with a TTL equal to the token's remaining lifetime
  (after that the token is expired anyway, so the set never grows without bound);
- ``chatmq:{user}:tokens-after``: every token of a user issued before this ms time is revoked
  ("sign out everywhere"); it expires after the longest token lifetime the deployment issues.

Every change is also published on ``AUTH_CHANGED_CHANNEL`` with the user id, so the broker
re-checks that user's live connections at once instead of waiting for them to reconnect.

``RevocationMemory`` answers the same check from memory in a process that checks the same tokens
again and again (an API worker: a device sends its token with every request), while it follows
that channel: the round trip to Redis was the largest single cost of a history page
(docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import threading
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


class RevocationMemory:
    """``TokenRevocations.is_revoked`` answered from memory while this process follows
    ``AUTH_CHANGED_CHANNEL``; ``revoke_token``, ``revoke_user`` and ``notify`` pass through.

    Each check first drains the subscription without waiting (a poll of its socket, ~2 us), and
    every notice drops what is remembered of its user: a revoke whose publish has reached this
    process is never answered from memory, whichever process made it. An answer read from Redis is
    kept only if no notice arrived while it was being read (it might predate that revoke), and for
    at most ``max_age_s``. Until the subscription is confirmed, after it fails, and after each
    (re)subscription, nothing is remembered: every check reads Redis, whose errors still refuse the
    token (fail closed). A new subscription is tried at most every ``RECONNECT_S``.

    Thread-safe: the API's worker threads share one per process (the subscription is its own
    connection, made lazily, so it never crosses a fork).
    """

    RECONNECT_S = 1.0
    MAX_USERS = 10_000  # emptied when full (a user has one entry per token it uses)

    def __init__(self, revocations: TokenRevocations, client: redis.Redis, max_age_s: float = 10.0) -> None:
        self._revocations = revocations
        self._client = client
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._pubsub: Any = None
        self._subscribed = False  # the server confirmed the subscription: notices reach us
        self._next_attempt = 0.0
        self._generation = 0  # moves on every notice: an answer read across one is not kept
        # user -> {(jti, issue time): (revoked, monotonic time read)}
        self._answers: dict[str, dict[tuple[Any, Any], tuple[bool, float]]] = {}

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        user = str(claims["sub"])
        key = (claims.get("jti"), claims.get("ims") or claims.get("iat"))
        now = time.monotonic()
        with self._lock:
            following = self._follow(now)
            if following:
                known = self._answers.get(user, {}).get(key)
                if known is not None and now - known[1] < self._max_age_s:
                    return known[0]
            generation = self._generation
        revoked = self._revocations.is_revoked(claims)  # a RedisError goes to the caller: refused
        if following:
            with self._lock:
                if self._subscribed and generation == self._generation:
                    if user not in self._answers and len(self._answers) >= self.MAX_USERS:
                        self._answers.clear()
                    self._answers.setdefault(user, {})[key] = (revoked, now)
        return revoked

    def revoke_token(self, claims: dict[str, Any]) -> bool:
        revoked = self._revocations.revoke_token(claims)
        self._forget(str(claims["sub"]))
        return revoked

    def revoke_user(self, user: str) -> int:
        mark = self._revocations.revoke_user(user)
        self._forget(user)
        return mark

    def notify(self, user: str) -> int:
        return self._revocations.notify(user)

    def close(self) -> None:
        with self._lock:
            self._drop_subscription()

    @property
    def following(self) -> bool:
        """The subscription is confirmed: answers may come from memory."""
        with self._lock:
            return self._follow(time.monotonic())

    def _forget(self, user: str) -> None:
        with self._lock:
            self._answers.pop(user, None)
            self._generation += 1

    def _follow(self, now: float) -> bool:
        """Drain the notices that arrived (under the lock); subscribe when due. True: following."""
        if self._pubsub is None:
            if now < self._next_attempt:
                return False
            self._next_attempt = now + self.RECONNECT_S
            try:
                self._pubsub = self._client.pubsub()
                self._pubsub.subscribe(AUTH_CHANGED_CHANNEL)
            except redis.RedisError:
                self._drop_subscription()
                return False
        try:
            while (message := self._pubsub.get_message(timeout=0)) is not None:
                kind = message.get("type")
                if kind == "message":
                    data = message["data"]
                    self._answers.pop(data.decode(errors="replace") if isinstance(data, bytes) else str(data), None)
                    self._generation += 1
                elif kind == "subscribe":  # first, or again after redis-py reconnected by itself
                    self._answers.clear()  # notices may have been missed meanwhile
                    self._generation += 1
                    self._subscribed = True
        except redis.RedisError:
            self._drop_subscription()
            return False
        return self._subscribed

    def _drop_subscription(self) -> None:
        self._answers.clear()
        self._generation += 1
        self._subscribed = False
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                pubsub.close()
