"""Rate limits kept in Redis, so every broker, bridge and API process counts against one budget.

Two shapes:
- LoginThrottle: failed logins per user and per address in fixed windows. Over a limit every
  attempt is refused, a right password included, so guessing cannot go faster than the limit.
  Only failures count: a device reconnecting all day with the right password is never throttled.
- MessageRate: a token bucket per sender (steady rate plus a burst), checked for a whole batch of
  sends in one pipelined round trip.
- LocalRate: the same bucket in this process's memory, for traffic too frequent and too cheap for a
  round trip each (typing indicators, which one broker relays and nobody stores).
Every key holds one user's or one address's state, so the limits work on Redis Cluster too. If
Redis is unreachable the limits fail open (logged): they protect capacity, and an outage of the
limiter must not become an outage of chat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

log = logging.getLogger(__name__)

_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 't', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
"""


class LoginThrottle:
    def __init__(self, client: Any, per_user: int, per_address: int, window_s: int = 60) -> None:
        self._redis = client
        self._limits = {"user": per_user, "addr": per_address}
        self._window = window_s

    def _keys(self, user: str | None, address: str | None) -> list[tuple[str, int]]:
        window = int(time.time()) // self._window
        keys = []
        if user and self._limits["user"]:
            keys.append((f"chatmq:rl:login:user:{{{user}}}:{window}", self._limits["user"]))
        if address and self._limits["addr"]:
            keys.append((f"chatmq:rl:login:addr:{{{address}}}:{window}", self._limits["addr"]))
        return keys

    def blocked(self, user: str | None, address: str | None) -> bool:
        keys = self._keys(user, address)
        if not keys:
            return False
        try:
            # one round trip (every login asks this); not MGET: the keys' hash tags differ (Cluster)
            pipe = self._redis.pipeline(transaction=False)
            for key, _ in keys:
                pipe.get(key)
            counts = pipe.execute()
        except redis.RedisError as exc:
            log.warning("login throttle unavailable (failing open): %s", exc)
            return False
        return any(int(count or 0) >= limit for count, (_, limit) in zip(counts, keys, strict=True))

    def failed(self, user: str | None, address: str | None) -> None:
        try:
            for key, _ in self._keys(user, address):
                pipe = self._redis.pipeline(transaction=False)
                pipe.incr(key)
                pipe.expire(key, self._window * 2)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("login throttle unavailable (failure not counted): %s", exc)


class ConnectionRate:
    """CONNECT attempts per address in fixed windows, successful or not. Off by default: many
    phones share one carrier-NAT address, so set it where devices do not (or at the load balancer)."""

    def __init__(self, client: Any, per_address: int, window_s: int = 60) -> None:
        self._redis = client
        self._limit = per_address
        self._window = window_s

    @property
    def enabled(self) -> bool:
        """False when off: callers then skip the (thread) hop to ``allow`` altogether."""
        return bool(self._limit)

    def allow(self, address: str | None) -> bool:
        if not self._limit or not address:
            return True
        key = f"chatmq:rl:conn:{{{address}}}:{int(time.time()) // self._window}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._window * 2)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            log.warning("connection rate limit unavailable (failing open): %s", exc)
            return True
        return int(count) <= self._limit


class LocalRate:
    """A token bucket per key in memory (see the module docstring); at most ``max_keys`` buckets
    (when full, they all start again from a full burst: rare, and never stricter than intended)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)

    def allow(self, key: str, now: float | None = None) -> bool:
        if self._rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._buckets.clear()
        self._buckets[key] = (tokens, now)
        return allowed


class MessageRate:
    """``what`` names the budget (sends, history requests), so each kind has a bucket of its own.

    The bridge asks once per writer batch, so the call is on the send path: against one Redis
    server the batch's EVALSHAs are written as one packed RESP buffer and their replies read off
    the connection (what redis-py's pipeline does, without its per-command objects: 8-15 µs of the
    caller's CPU per decision through the pipeline, a few through this path; ``bench/ratelimit.py``).
    On a Redis Cluster (each sender's key in its own slot) it goes through the cluster pipeline.
    """

    def __init__(self, client: Any, rate_per_s: float, burst: int, what: str = "msg") -> None:
        self._redis = client
        self._rate = rate_per_s
        self._burst = burst
        self._what = what
        # EVALSHA straight into the pipeline: redis-py's Script objects ask SCRIPT EXISTS in a round
        # trip of its own before every pipelined batch; the script is loaded again only when Redis
        # says it lost it (a restart or SCRIPT FLUSH).
        self._sha: str | None = None
        self._packed_head = b""  # EVALSHA <sha> 1, for the packed path; rebuilt with the sha
        self._pool = client.connection_pool if isinstance(client, redis.Redis) else None

    def allow(self, senders: Sequence[str]) -> list[bool]:
        """One decision per send, in order (a sender may appear several times)."""
        if self._rate <= 0 or not senders:
            return [True] * len(senders)
        now = int(time.time() * 1000)
        try:
            try:
                return self._run(senders, now)
            except redis.exceptions.NoScriptError:
                self._sha = None
                return self._run(senders, now)
        except redis.RedisError as exc:
            log.warning("message rate limit unavailable (failing open): %s", exc)
            return [True] * len(senders)

    def _run(self, senders: Sequence[str], now: int) -> list[bool]:
        if self._sha is None:
            self._sha = self._redis.script_load(_BUCKET)
            self._packed_head = b"*7\r\n$7\r\nEVALSHA\r\n" + _bulk(self._sha) + b"$1\r\n1\r\n"
        if self._pool is not None:
            return self._run_packed(self._pool, senders, now)
        sha, rate, burst, what = self._sha, self._rate, self._burst, self._what
        pipe = self._redis.pipeline(transaction=False)
        for sender in senders:
            pipe.execute_command("EVALSHA", sha, 1, f"chatmq:rl:{what}:{{{sender}}}", rate, burst, now)
        return [bool(result) for result in pipe.execute()]

    def _run_packed(self, pool: Any, senders: Sequence[str], now: int) -> list[bool]:
        head, what = self._packed_head, self._what
        tail = _bulk(str(self._rate)) + _bulk(str(self._burst)) + _bulk(str(now))
        packed = b"".join([head + _bulk(f"chatmq:rl:{what}:{{{sender}}}") + tail for sender in senders])
        conn = pool.get_connection()
        try:  # retried as redis-py retries a pipeline: on a lost connection, with a fresh one
            return conn.retry.call_with_retry(
                lambda: _exchange(conn, packed, len(senders)), lambda _error: conn.disconnect()
            )
        finally:
            pool.release(conn)


def _bulk(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _exchange(conn: Any, packed: bytes, count: int) -> list[bool]:
    """Write the packed commands, read every reply (so the connection stays in step even when one
    is an error), then raise the first error if any."""
    conn.send_packed_command([packed])
    replies: list[bool] = []
    error: redis.ResponseError | None = None
    for _ in range(count):
        try:
            replies.append(bool(conn.read_response()))
        except redis.ResponseError as exc:
            error = error or exc
    if error is not None:
        raise error
    return replies
