"""Sends over HTTP, handed to the bridge: the request/reply contract between the API and the bridge.

One path to the log: the API never writes a message itself. It pushes the raw send (the same JSON
a device publishes on ``chat/{conv}/send/{user}``) onto the Redis list of the bridge that owns the
conversation's partition and waits for that bridge's answer on a reply key. The bridge validates
and stores it on the very path MQTT sends take (its writer thread, in order with them, with the
same idempotency, rate limit and ack), then pushes the ack, the same object ``user/{user}/ack``
carries, onto the reply key. A send whose answer does not come in time was not acknowledged: the
client resends with the same ``client_msg_id``, and idempotency keeps it single.

Keys (one key per command, so Redis Cluster works): ``chatmq:httpsend:{owner}`` (a list per bridge:
``bridge`` for the single bridge, else the worker id holding the partition's lease) and
``chatmq:httpsend:reply:{id}`` (a list holding the one answer, expiring shortly after).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

SINGLE_BRIDGE = "bridge"  # the owner name of a bridge run without --worker-id
QUEUE_TTL_S = 60  # an unread request list (its bridge is gone) disappears after this
REPLY_TTL_S = 30
RETRY_STATUS = "retry"  # the bridge could not take it (its partition moved): resend at once


def queue_key(owner: str) -> str:
    return f"chatmq:httpsend:{{{owner}}}"


def reply_key(request_id: str) -> str:
    return f"chatmq:httpsend:reply:{request_id}"


@dataclass(frozen=True, slots=True)
class SendRequest:
    id: str
    conv: str
    user: str
    payload: bytes  # the send as a device would publish it
    deadline_ms: int  # the API stops waiting then; later the bridge need not store it

    @classmethod
    def new(cls, conv: str, user: str, payload: bytes, deadline_ms: int) -> SendRequest:
        return cls(uuid.uuid4().hex, conv, user, payload, deadline_ms)

    def encode(self) -> bytes:
        return orjson.dumps({"id": self.id, "conv": self.conv, "user": self.user,
                             "payload": self.payload.decode("utf-8", "surrogatepass"),
                             "deadline_ms": self.deadline_ms})  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes) -> SendRequest:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(str(data["id"]), str(data["conv"]), str(data["user"]),
                   str(data["payload"]).encode("utf-8", "surrogatepass"), int(data["deadline_ms"]))  # fmt: skip
