"""Bridge workers in Redis: who is alive (a registry with deadlines) and who holds which partition (leases).

Keys (each command and script touches exactly one key, so everything works on Redis Cluster):
  chatmq:bridge:{workers}          hash    worker id -> "deadline_ms|partitions", one field per worker
  chatmq:bridge:lease:{pN}         string  "worker#instance" of partition N's holder, with a PX TTL

Why a registry hash with deadlines rather than one key per worker: a worker must list the others,
and a cluster-safe listing needs them in one key (no SCAN across nodes). Deadlines use the Redis
server's clock (TIME inside the script), so workers on machines with skewed clocks agree.

Why leases on top of the registry: the registry decides who *should* own a partition, but views
of it change at slightly different moments in different workers. The lease decides who *may*
write: it is taken with SET NX PX, renewed and released only by its holder (compare-and-set
scripts), so a new owner starts only after the old one released (clean hand-over, after draining)
or stopped renewing (death). The value names the process instance, not just the worker id, so a
worker restarted under the same id waits for its previous incarnation's leases to lapse.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

REGISTRY_KEY = "chatmq:bridge:{workers}"
_REGISTRY_KEEP_MS = 24 * 3600 * 1000  # the hash itself expires a day after the last beat of any worker
_FORGET_AFTER_MS = 60_000  # a dead worker's field is dropped this long after its deadline

_BEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. '|' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local deadline, parts = string.match(all[i + 1], '^(%d+)|(%d+)$')
  if deadline and tonumber(deadline) > now then
    live[#live + 1] = all[i]
    live[#live + 1] = parts
  elseif not deadline or tonumber(deadline) < now - tonumber(ARGV[5]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class PartitionCountMismatch(RuntimeError):
    """Workers that split conversations into different partition counts would both own some."""


def lease_key(partition: int) -> str:
    return f"chatmq:bridge:lease:{{p{partition}}}"


@dataclass(frozen=True, slots=True)
class LiveWorkers:
    workers: frozenset[str]
    partitions: dict[str, int]  # worker -> the partition count it runs with


class WorkerRegistry:
    """One worker's entry in the registry: ``beat`` refreshes it and returns everyone alive."""

    def __init__(self, client: redis.Redis, worker: str, partitions: int, ttl_ms: int) -> None:
        self._redis = client
        self.worker = worker
        self.partitions = partitions
        self.ttl_ms = ttl_ms
        self._beat = client.register_script(_BEAT)

    def beat(self) -> LiveWorkers:
        """Refresh this worker's deadline; raise PartitionCountMismatch if a live worker disagrees on P."""
        raw = self._beat(
            keys=[REGISTRY_KEY],
            args=[self.worker, self.ttl_ms, self.partitions, _REGISTRY_KEEP_MS, _FORGET_AFTER_MS],
        )
        live = _pairs(raw)
        others = {w: p for w, p in live.items() if p != self.partitions}
        if others:
            raise PartitionCountMismatch(
                f"bridge worker {self.worker!r} runs with {self.partitions} partitions but live workers "
                f"{sorted(others)} run with {sorted(set(others.values()))}: every worker needs the same "
                "CHATMQ_BRIDGE_PARTITIONS (stop them all to change it)"
            )
        return LiveWorkers(frozenset(live), live)

    def leave(self) -> None:
        """Drop this worker's entry at once, so the others re-balance without waiting for its deadline."""
        self._redis.hdel(REGISTRY_KEY, self.worker)


def live_workers(client: redis.Redis) -> dict[str, int]:
    """Workers alive now, with their partition counts (for ops and tests; workers use ``beat``)."""
    seconds, micros = client.time()
    now = seconds * 1000 + micros // 1000
    alive = {}
    for field, value in client.hgetall(REGISTRY_KEY).items():
        deadline, _, parts = _text(value).partition("|")
        if deadline.isdigit() and int(deadline) > now and parts.isdigit():
            alive[_text(field)] = int(parts)
    return alive


class Leases:
    """Partition leases held by one process instance; every call touches one key."""

    def __init__(
        self, client: redis.Redis, worker: str, ttl_ms: int, key_of: Callable[[int], str] = lease_key
    ) -> None:
        self._redis = client
        self.ttl_ms = ttl_ms
        self._key_of = key_of  # another service's leases (the notifier's) live under its own keys
        self.holder = f"{worker}#{secrets.token_hex(4)}"  # this process, not just this worker id
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, partition: int) -> bool:
        """Take the lease if it is free (or already ours); False while another instance holds it."""
        return bool(self._acquire(keys=[self._key_of(partition)], args=[self.holder, self.ttl_ms]))

    def renew(self, partition: int) -> bool:
        """Extend our lease; False if it lapsed or someone else holds it (then we must stop writing)."""
        return bool(self._renew(keys=[self._key_of(partition)], args=[self.holder, self.ttl_ms]))

    def release(self, partition: int) -> bool:
        """Give the lease up, only if it is still ours."""
        return bool(self._release(keys=[self._key_of(partition)], args=[self.holder]))


def lease_holder(client: redis.Redis, partition: int) -> str | None:
    """The worker id holding ``partition`` now, or None (for ops and tests)."""
    value = client.get(lease_key(partition))
    return None if value is None else _text(value).split("#", 1)[0]


def _pairs(raw: list[Any]) -> dict[str, int]:
    return {_text(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
