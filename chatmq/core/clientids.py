"""Which user an MQTT client id belongs to, for brokers that key sessions by client id alone.

RabbitMQ names a device's session queue after its client id (``mqtt-subscription-{id}qos1``) and
resumes it for whoever connects with that id next: another user's login with the same id would
take over the session and what it queued. chatmq's own broker refuses that ("a client id belongs
to another user"); on RabbitMQ the login hook refuses it by claiming each client id for the first
user that connects with it, here in Redis, and the session enforcer (chatmq.adapters.rabbitmq)
reads the owners back to tell whose queue is whose.

A claim has no expiry: a client id stays its user's (one key per device id; use ``{user}.{device}``
ids, as docs/protocol.md suggests, and ids never collide).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_KEY = "chatmq:client-owner:"


class ClientIds:
    def __init__(self, client: Any) -> None:
        self._redis = client

    def claim(self, client_id: str, user: str) -> bool:
        """True if ``client_id`` is ``user``'s now (claimed now or before); False if another
        user's. Raises what Redis raises (callers refuse the login then)."""
        key = _KEY + client_id
        if self._redis.set(key, user, nx=True):
            return True
        owner = self._redis.get(key)
        return (owner.decode() if isinstance(owner, bytes) else owner) == user

    def owners(self, client_ids: Iterable[str]) -> dict[str, str]:
        """The owner of each claimed id among ``client_ids`` (unclaimed ones are left out)."""
        ids = list(client_ids)
        if not ids:
            return {}
        values = self._redis.mget([_KEY + client_id for client_id in ids])
        return {client_id: value.decode() if isinstance(value, bytes) else value
                for client_id, value in zip(ids, values, strict=True) if value is not None}  # fmt: skip
