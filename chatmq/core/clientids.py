"""Which user an MQTT client id belongs to, for brokers that key sessions by client id alone.

RabbitMQ names a device's session queue after its client id (``mqtt-subscription-{id}qos1``) and
resumes it for whoever connects with that id next: another user's login with the same id would
take over the session and what it queued. chatmq's own broker refuses that ("a client id belongs
to another user"); on RabbitMQ the login hook refuses it by claiming each client id for the first
user that connects with it, here in Redis, and the session guard (chatmq.adapters.rabbitmq) reads
the owners back to tell whose queue is whose, and each user's client ids to look only at the
queues of the users a change concerns.

A claim lasts ``ttl_s`` (``CHATMQ_RABBITMQ_CLIENT_ID_TTL_S``, 30 days) from the user's last login
with it, and the guard's sweep renews the claims of every queue it finds bound, so an id is freed
only after its device stayed away that long: far longer than RabbitMQ keeps a session queue
without a consumer (``mqtt.subscription_ttl``, 24 h), so nobody can claim an id whose queue still
holds its owner's messages. Use ``{user}.{device}`` ids, as docs/protocol.md suggests, and ids
never collide. Each user's claims are indexed in a sorted set scored by expiry (pruned as it is
written): a key per client id and one per user, no scan.

Redis unreachable: ``claim`` raises and the login hook refuses the login; the guard retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

DEFAULT_TTL_S = 30 * 24 * 3600
_KEY = "chatmq:client-owner:"
_INDEX = "chatmq:client-ids-of:"

# The owner key alone (one slot: Redis Cluster safe): claim if free, renew if the user's own.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class ClientIds:
    def __init__(self, client: Any, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._redis = client
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)

    def claim(self, client_id: str, user: str) -> bool:
        """True if ``client_id`` is ``user``'s now (claimed now or before, its lifetime renewed);
        False if another user's. Raises what Redis raises (callers refuse the login then)."""
        if not self._claim(keys=[_KEY + client_id], args=[user, self.ttl_s]):
            return False
        self._index({client_id: user})
        return True

    def renew(self, owners: dict[str, str]) -> None:
        """Start each claim's lifetime again (client id -> its owner, as ``owners`` answered)."""
        if not owners:
            return
        pipe = self._redis.pipeline(transaction=False)
        for client_id in owners:
            pipe.expire(_KEY + client_id, self.ttl_s)
        pipe.execute()
        self._index(owners)

    def owners(self, client_ids: Iterable[str]) -> dict[str, str]:
        """The owner of each claimed id among ``client_ids`` (unclaimed ones are left out)."""
        ids = list(client_ids)
        if not ids:
            return {}
        values = self._redis.mget([_KEY + client_id for client_id in ids])
        return {client_id: _text(value) for client_id, value in zip(ids, values, strict=True) if value is not None}

    def of_user(self, user: str) -> list[str]:
        """The client ids ``user`` holds now (claimed, not expired)."""
        ids = [_text(value) for value in self._redis.zrangebyscore(_INDEX + user, _now_ms(), "+inf")]
        owners = self.owners(ids)
        return [client_id for client_id in ids if owners.get(client_id) == user]

    def _index(self, owners: dict[str, str]) -> None:
        now = _now_ms()
        expires = now + self.ttl_s * 1000
        by_user: dict[str, list[str]] = {}
        for client_id, user in owners.items():
            by_user.setdefault(user, []).append(client_id)
        pipe = self._redis.pipeline(transaction=False)
        for user, ids in by_user.items():
            key = _INDEX + user
            pipe.zadd(key, dict.fromkeys(ids, expires))
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.expire(key, self.ttl_s)
        pipe.execute()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
