"""Sends the API handed over (chatmq/core/httpsend.py): taken from this bridge's Redis list and
put on the path MQTT sends take, so the writer thread stays the one writer of each conversation.

A request is only ever in Redis or in this process: if the bridge dies after taking it, nothing
answers and the API tells its client to resend (same ``client_msg_id``), exactly like a device
whose send was never acked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from chatmq.core.httpsend import REPLY_TTL_S, SendRequest, queue_key, reply_key
from chatmq.core.protocol import encode
from chatmq.core.store.base import now_ms

log = logging.getLogger(__name__)

POLL_S = 1  # BLPOP timeout: how quickly a stop is noticed


class HttpSends:
    def __init__(self, client: redis.Redis, owner: str, handle: Callable[[SendRequest], None]) -> None:
        self._redis = client
        self.owner = owner
        self._handle = handle
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-httpsend", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def reply(self, request_id: str, ack: dict[str, Any]) -> None:
        """Answer one request (the writer thread calls this once the send is settled)."""
        key = reply_key(request_id)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, encode(ack))
                pipe.expire(key, REPLY_TTL_S)
                pipe.execute()
        except redis.RedisError as exc:  # the client resends; idempotency answers it then
            log.warning("could not answer HTTP send %s (%s)", request_id, exc)

    def _run(self) -> None:
        key = queue_key(self.owner)
        while not self._stopping.is_set():
            try:
                popped = self._redis.blpop([key], timeout=POLL_S)
            except redis.RedisError as exc:
                log.warning("cannot read HTTP sends from Redis (%s); retrying", exc)
                self._stopping.wait(POLL_S)
                continue
            if popped is None:
                continue
            try:
                request = SendRequest.decode(popped[1])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("dropped a malformed HTTP send request: %s", exc)
                continue
            if request.deadline_ms < now_ms():
                continue  # the API gave up on it: its client resends
            self._handle(request)
