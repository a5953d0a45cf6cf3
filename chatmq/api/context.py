"""What every request needs, kept on ``app.extensions["chatmq"]`` instead of module globals.

The store is opened lazily and per process: the server forks workers before building the app, and a
SQLite connection must never cross a fork, so each worker opens its own on first use.
"""

from __future__ import annotations

import os
import threading

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from chatmq.core import redisconn
from chatmq.core.auth import Authenticator
from chatmq.core.config import Settings
from chatmq.core.identity import external_tokens
from chatmq.core.presence import Presence
from chatmq.core.ratelimit import LoginThrottle
from chatmq.core.revocation import RevocationMemory, TokenRevocations
from chatmq.core.store import Store, open_store

EXTENSION = "chatmq"


class ApiContext:
    def __init__(self, settings: Settings, store: Store | None, redis_client: redis.Redis | None) -> None:
        self.settings = settings
        self.secret = settings.load_secret()
        # Few, quick retries: redis-py's default (10, backing off to seconds) would make a request,
        # and /healthz, hang for ~5 s while Redis is down instead of answering.
        self.redis: redis.Redis = redis_client or redisconn.connect(
            settings.redis_url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=2),
        )
        self.presence = Presence(self.redis, int(settings.presence_ttl_s * 1000))
        self.throttle = LoginThrottle(self.redis, settings.login_failures_per_user,
                                      settings.login_failures_per_address, settings.login_window_s)
        # Revocation checks answered from memory while this worker follows chatmq:auth-changed
        # (every request checks its token; the round trip to Redis was the dearest part of a page).
        self.revocations = RevocationMemory(TokenRevocations(self.redis, settings.token_ttl_s), self.redis)
        self.external = external_tokens(settings)  # one per process: it caches the JWKS keys
        self._given_store = store
        self._store: Store | None = store
        self._store_pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        if self._given_store is not None:
            return self._given_store
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            with self._lock:
                if self._store is None or self._store_pid != pid:
                    # After a fork the inherited handle belongs to the parent: drop it, never close it.
                    self._store = open_store(self.settings.resolved_store_url)
                    self._store_pid = pid
        return self._store

    @property
    def authenticator(self) -> Authenticator:
        """Tokens are checked against their revocation marks, as the broker checks them: the EMQX
        hook logs devices in through this one."""
        return Authenticator(self.store, self.secret, self.revocations, external=self.external)

    def close(self) -> None:
        """Close what this context opened itself (a store handed in belongs to the caller)."""
        self.revocations.close()
        if self._given_store is None and self._store is not None and self._store_pid == os.getpid():
            self._store.close()
            self._store = None


def get_context(app: Flask | None = None) -> ApiContext:
    return (app or current_app).extensions[EXTENSION]
