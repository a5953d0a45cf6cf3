"""A membership change reaches the brokers before anything said after it: exact removal.

Brokers check every delivery against a membership view that follows the store. Polling alone lets
a removed member receive for up to one refresh interval after the removal was stored. Two paths
close that window, one per kind of traffic:

- **What the bridge publishes** (messages, receipts) comes from a store write. After each write the
  bridge reads the store's membership version; when it moved past what the bridge last announced on
  its connection, the bridge first publishes ``{"version": V}`` on ``MEMBERSHIP_TOPIC`` there (the
  ``Fence``). chatmq's broker handles one connection's packets in order and catches its view up to
  at least V before it reads the next one, so every later publish of the bridge is checked against
  memberships at least as new as the write it came from: nothing whose seq or marker was written
  after a removal committed reaches the removed member. No change, no notice: nothing per message.
- **What devices relay** (typing) never passes the bridge. After a membership change the API
  announces the version on Redis (``CHANGED_CHANNEL``); each broker catches up at once and reports
  the version it applied (``AppliedVersions.report``, with a short TTL as a liveness mark); the API
  answers only once every live broker reports at least that version, or after a bounded wait.
  Every membership change an operator or a user makes goes through ``wait_applied``: the API's
  conversation routes, the admin API and the ``chatmq`` admin commands (chatmq.core.admin).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from chatmq.core.control import MEMBERSHIP_TOPIC

log = logging.getLogger(__name__)

# One hash tag for every key, so the registry lives in one Redis Cluster slot.
CHANGED_CHANNEL = "chatmq:{brokers}:membership-changed"
_LIVE = "chatmq:{brokers}:live"
_APPLIED = "chatmq:{brokers}:applied:"
APPLIED_TTL_MS = 3000  # a broker reports at least every refresh interval; silent this long = gone
_POLL_S = 0.005


def parse_notice(raw: bytes) -> int | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) and version >= 0 else None


class Fence:
    """The bridge side of the first path (see the module docstring); thread-safe: the writer and the
    receipt worker share it, and a notice is published under the lock, so a publish that follows
    ``after_write`` in any thread goes out after the notice it depends on."""

    def __init__(self, read_version: Callable[[], int], publish: Callable[[str, dict[str, Any]], Any]) -> None:
        self._read_version = read_version
        self._publish = publish
        self._lock = threading.Lock()
        self._announced = -1

    def reset(self) -> None:
        """A new connection: announce again before the next publish."""
        with self._lock:
            self._announced = -1

    def after_write(self) -> None:
        """Call after a store write and before publishing anything derived from it. Raises what the
        version read raises (the caller retries as it retries the write)."""
        version = self._read_version()
        with self._lock:
            if version > self._announced:
                self._publish(MEMBERSHIP_TOPIC, {"version": version})
                self._announced = version


def wait_applied(client: Any, read_version: Callable[[], int], timeout_s: float) -> bool:
    """After a membership change: announce the store's membership version and return once every live
    broker enforces it (or after ``timeout_s``: False, logged). Redis unreachable: logged, False;
    the brokers' poll catches up within their refresh interval."""
    try:
        return AppliedVersions(client).announce_and_wait(read_version(), timeout_s)
    except redis.RedisError as exc:
        log.warning("could not tell the brokers of a membership change: %s", exc)
        return False


class AppliedVersions:
    """The Redis side of the second path: brokers report, the API announces and waits."""

    def __init__(self, client: Any, ttl_ms: int = APPLIED_TTL_MS) -> None:
        self._redis = client
        self._ttl_ms = ttl_ms

    def report(self, broker: str, version: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(_APPLIED + broker, version, px=self._ttl_ms)
        pipe.sadd(_LIVE, broker)
        pipe.execute()

    def forget(self, broker: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.srem(_LIVE, broker)
        pipe.delete(_APPLIED + broker)
        pipe.execute()

    def lagging(self, version: int) -> list[str]:
        """Live brokers whose view is older than ``version``; brokers that stopped reporting are
        dropped from the registry (their mark expired)."""
        brokers = sorted(b.decode() if isinstance(b, bytes) else str(b) for b in self._redis.smembers(_LIVE))
        if not brokers:
            return []
        applied = self._redis.mget([_APPLIED + broker for broker in brokers])
        gone = [broker for broker, value in zip(brokers, applied, strict=True) if value is None]
        if gone:
            self._redis.srem(_LIVE, *gone)
        return [broker for broker, value in zip(brokers, applied, strict=True)
                if value is not None and int(value) < version]  # fmt: skip

    def announce_and_wait(self, version: int, timeout_s: float) -> bool:
        """Tell every broker, then wait until each live one applied ``version``; False on timeout."""
        self._redis.publish(CHANGED_CHANNEL, str(version))
        deadline = time.monotonic() + timeout_s
        while True:
            behind = self.lagging(version)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("membership version %d not applied by %s within %.1f s", version, behind, timeout_s)
                return False
            time.sleep(_POLL_S)
