"""Presence in Redis: per-device state with deadlines refreshed by heartbeats, aggregated per user.

Keys (the ``{user}`` hash tag keeps one user's keys in one Redis Cluster slot):
  chatmq:pres:{user}:dev          hash  device -> "conn|deadline_ms"
  chatmq:pres:{user}:state        hash  status, last_seen
  chatmq:pres:deadlines:{bN}      zset  "user/device" scored by deadline, for the expiry sweep;
                                        16 buckets by user hash, so the sweep spreads over slots
Each transition runs as one Lua script on one user's keys, so concurrent bridges never interleave a
read and a write, and no script ever spans two cluster slots. The deadline index is only a hint for
the sweep: a due entry is checked against the user's own hash before anything goes offline, and it
is removed only if its score is still the one the sweep saw (a heartbeat may have moved it).
A device is online until its deadline (about 2.5 heartbeats); an offline with a ``conn`` other
than the device's current one is a late will from a replaced connection and is ignored.
One user holds at most ``devices_per_user`` devices: a heartbeat of a new device id beyond it
(after the user's expired devices are dropped) is refused (``TooManyDevices``) and stores nothing,
so one account cannot make presence hold an unbounded number of keys.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

DEADLINE_BUCKETS = 16

# Shared tail: recompute the user's aggregate; return {changed, status, last_seen}.
_AGGREGATE = """
local function aggregate(dev_key, state_key, now)
  local online = false
  local all = redis.call('HGETALL', dev_key)
  for i = 2, #all, 2 do
    local deadline = tonumber(string.match(all[i], '|(%d+)$'))
    if deadline and deadline > now then online = true end
  end
  local status = online and 'online' or 'offline'
  local prev = redis.call('HGET', state_key, 'status')
  if online then redis.call('HSET', state_key, 'last_seen', now) end
  if prev ~= status then
    redis.call('HSET', state_key, 'status', status)
    if not online then redis.call('HSET', state_key, 'last_seen', now) end
    return {1, status, redis.call('HGET', state_key, 'last_seen')}
  end
  return {0, status, redis.call('HGET', state_key, 'last_seen') or '0'}
end
"""

_ONLINE = _AGGREGATE + """
local now = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= cap then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local deadline = tonumber(string.match(all[i + 1], '|(%d+)$'))
    if not deadline or deadline <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
  if redis.call('HLEN', KEYS[1]) >= cap then return {-4} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return aggregate(KEYS[1], KEYS[2], now)
"""

_OFFLINE = _AGGREGATE + """
local now = tonumber(ARGV[3])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {-1} end
local conn = string.match(cur, '^(.*)|%d+$')
if ARGV[2] ~= '' and conn ~= ARGV[2] then return {-2} end
redis.call('HDEL', KEYS[1], ARGV[1])
return aggregate(KEYS[1], KEYS[2], now)
"""

_EXPIRE = _AGGREGATE + """
local now = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local deadline = tonumber(string.match(cur, '|(%d+)$'))
  if deadline and deadline > now then return {-3} end
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return aggregate(KEYS[1], KEYS[2], now)
"""

# Remove a due index entry only if no heartbeat has moved it since the sweep read it.
_UNINDEX = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


class TooManyDevices(Exception):
    def __init__(self, user: str, device: str, limit: int) -> None:
        super().__init__(f"{user} has {limit} live devices in presence already; {device!r} not added")
        self.user, self.device, self.limit = user, device, limit


@dataclass(frozen=True, slots=True)
class UserPresence:
    user: str
    online: bool
    last_seen: int  # ms since epoch; 0 if never seen

    def to_payload(self) -> dict[str, Any]:
        return {"user": self.user, "status": "online" if self.online else "offline", "last_seen": self.last_seen}


def _keys(user: str) -> tuple[str, str]:
    return f"chatmq:pres:{{{user}}}:dev", f"chatmq:pres:{{{user}}}:state"


def deadline_key(user: str) -> str:
    return f"chatmq:pres:deadlines:{{b{zlib.crc32(user.encode()) % DEADLINE_BUCKETS}}}"


ALL_DEADLINE_KEYS = tuple(f"chatmq:pres:deadlines:{{b{n}}}" for n in range(DEADLINE_BUCKETS))


class Presence:
    """Presence transitions. Each method returns the new aggregate when it changed, else None."""

    def __init__(self, client: redis.Redis, ttl_ms: int, devices_per_user: int = 0) -> None:
        self._redis = client
        self._ttl_ms = ttl_ms
        self.devices_per_user = devices_per_user  # 0 = no limit
        self._online = client.register_script(_ONLINE)
        self._offline = client.register_script(_OFFLINE)
        self._expire = client.register_script(_EXPIRE)
        self._unindex = client.register_script(_UNINDEX)

    def device_online(self, user: str, device: str, conn: str, now_ms: int) -> UserPresence | None:
        """Raises TooManyDevices for a new device of a user at ``devices_per_user`` live devices."""
        dev, state = _keys(user)
        deadline = now_ms + self._ttl_ms
        result = self._online(keys=[dev, state], args=[device, conn, deadline, now_ms, self.devices_per_user])
        if result and int(result[0]) == -4:
            raise TooManyDevices(user, device, self.devices_per_user)
        self._redis.zadd(deadline_key(user), {f"{user}/{device}": deadline})
        return _changed(user, result)

    def device_offline(self, user: str, device: str, conn: str, now_ms: int) -> UserPresence | None:
        """Mark a device offline, unless ``conn`` names a connection that was already replaced.

        The deadline index entry is left for the sweep, which finds the device gone and drops it.
        """
        dev, state = _keys(user)
        return _changed(user, self._offline(keys=[dev, state], args=[device, conn, now_ms]))

    def expire(
        self, now_ms: int, limit: int = 1000, accept: Callable[[str], bool] | None = None
    ) -> list[UserPresence]:
        """Take devices whose heartbeat deadline passed offline; return users whose state changed.

        ``accept(user)`` restricts the sweep to some users (a partitioned bridge worker sweeps the
        users whose presence it handles, so one user's announcements always come from one worker).
        """
        changes = []
        for key in ALL_DEADLINE_KEYS:
            for member, score in self._redis.zrangebyscore(key, "-inf", now_ms, start=0, num=limit, withscores=True):
                name = member.decode() if isinstance(member, bytes) else member
                user, _, device = name.partition("/")
                if accept is not None and not accept(user):
                    continue
                dev, state = _keys(user)
                change = _changed(user, self._expire(keys=[dev, state], args=[device, now_ms]))
                self._unindex(keys=[key], args=[name, int(score)])
                if change is not None:
                    changes.append(change)
        return changes

    def online(self, users: Iterable[str], now_ms: int) -> set[str]:
        """Which of ``users`` have a live device now (one pipelined round trip for all of them)."""
        wanted = sorted(set(users))
        if not wanted:
            return set()
        with self._redis.pipeline(transaction=False) as pipe:
            for user in wanted:
                pipe.hvals(_keys(user)[0])
            answers = pipe.execute()
        return {user for user, devices in zip(wanted, answers, strict=True)
                if any(int(v.rsplit(b"|", 1)[1]) > now_ms for v in devices)}  # fmt: skip

    def forget(self, user: str) -> None:
        """Delete the user's presence (an erased user): devices, last seen, and their deadline
        entries (each key in its own command, cluster-safe)."""
        dev, state = _keys(user)
        devices = [d.decode() if isinstance(d, bytes) else d for d in self._redis.hkeys(dev)]
        self._redis.delete(dev)
        self._redis.delete(state)
        if devices:
            self._redis.zrem(deadline_key(user), *(f"{user}/{device}" for device in devices))

    def get(self, user: str, now_ms: int) -> UserPresence:
        dev, state = _keys(user)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(dev)
            pipe.hget(state, "last_seen")
            devices, last_seen = pipe.execute()
        online = any(int(v.rsplit(b"|", 1)[1]) > now_ms for v in devices.values())
        return UserPresence(user, online, int(last_seen or 0))


def _changed(user: str, result: list[Any]) -> UserPresence | None:
    if not result or int(result[0]) != 1:
        return None
    status = result[1].decode() if isinstance(result[1], bytes) else result[1]
    return UserPresence(user, status == "online", int(result[2] or 0))
