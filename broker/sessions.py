"""Persistent MQTT sessions in Redis: subscriptions and queued messages survive a broker restart.

amqtt 0.12 defect: sessions live in memory only. Only clean_session=0 sessions are kept. Redis
holds, per client id, a hash (owner identity and subscriptions) and a list (queued messages, oldest
first); both expire ``expiry_s`` after they were last written, which bounds how long an abandoned
session costs memory. Queues are bounded by the broker, not here.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass

from chatcore import redisconn

log = logging.getLogger(__name__)

_PREFIX = "chatmq:broker:session:"


def _session_key(client_id: str) -> str:
    # The {client id} hash tag keeps a session and its queue in one Redis Cluster slot.
    return f"{_PREFIX}{{{client_id}}}"


def _queue_key(client_id: str) -> str:
    return f"{_PREFIX}{{{client_id}}}:queue"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    topic: str
    data: bytes
    qos: int

    def encode(self) -> str:
        return json.dumps({"t": self.topic, "d": base64.b64encode(self.data).decode(), "q": self.qos})

    @classmethod
    def decode(cls, raw: bytes | str) -> QueuedMessage:
        item = json.loads(raw)
        return cls(item["t"], base64.b64decode(item["d"]), int(item["q"]))


@dataclass(frozen=True, slots=True)
class StoredSession:
    client_id: str
    owner: dict[str, object]  # how the auth plugin identified the client (see broker.services)
    subscriptions: dict[str, int]
    queue: list[QueuedMessage]


class SessionStore:
    def __init__(self, url: str, expiry_s: int) -> None:
        self._redis = redisconn.connect_async(url)
        self.expiry_s = expiry_s

    async def check(self) -> None:
        """Fail at start-up, loudly, rather than run with sessions that silently do not persist."""
        await self._redis.ping()

    async def save(self, client_id: str, owner: dict[str, object], subscriptions: dict[str, int]) -> None:
        key = _session_key(client_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"owner": json.dumps(owner), "subs": json.dumps(subscriptions)})
            pipe.expire(key, self.expiry_s)
            pipe.expire(_queue_key(client_id), self.expiry_s)
            await pipe.execute()

    async def enqueue(self, client_id: str, message: QueuedMessage) -> None:
        key = _queue_key(client_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, message.encode())
            pipe.expire(key, self.expiry_s)
            await pipe.execute()

    async def replace_queue(self, client_id: str, messages: list[QueuedMessage]) -> None:
        key = _queue_key(client_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if messages:
                pipe.rpush(key, *(message.encode() for message in messages))
                pipe.expire(key, self.expiry_s)
            await pipe.execute()

    async def delete(self, client_id: str) -> None:
        await self._redis.delete(_session_key(client_id), _queue_key(client_id))

    async def load_all(self) -> list[StoredSession]:
        found: list[StoredSession] = []
        async for key in self._redis.scan_iter(match=_PREFIX + "{*}", count=500):
            client_id = key.decode()[len(_PREFIX) + 1 : -1]
            fields = await self._redis.hgetall(key)
            raw_queue = await self._redis.lrange(_queue_key(client_id), 0, -1)
            try:
                found.append(
                    StoredSession(
                        client_id,
                        json.loads(fields[b"owner"]),
                        {str(k): int(v) for k, v in json.loads(fields[b"subs"]).items()},
                        [QueuedMessage.decode(raw) for raw in raw_queue],
                    )
                )
            except (KeyError, ValueError, TypeError):
                log.exception("skipping unreadable stored session %r", client_id)
        return found

    async def close(self) -> None:
        await self._redis.aclose()
