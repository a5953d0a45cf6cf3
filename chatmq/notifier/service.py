"""The notifier process: dispatch the outbox into deliveries, send them, prune the delivery log.

One notifier is active at a time: it holds a lease in Redis (``chatmq:notifier:lease``, the
bridge's lease mechanics from ``chatmq.core.leases``), so a second one started beside it is a hot
standby that takes over one lease TTL after the first died. Nothing lives only in memory: the
outbox and the deliveries are in the store, so ``kill -9`` at any moment loses nothing; what was
on the wire is sent again, with the same idempotency key.

Off the send path by design: the bridge only writes one small outbox row with each message, in
the transaction it runs anyway. Presence look-ups, member and push-target reads, badge counts
and HTTP all happen here, in another process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import httpx
import redis

from chatmq.core import redisconn
from chatmq.core.config import Settings
from chatmq.core.leases import Leases
from chatmq.core.presence import Presence
from chatmq.core.retry import RetryPolicy
from chatmq.core.store import Store, open_store
from chatmq.core.store.base import now_ms
from chatmq.notifier.dispatch import Dispatcher
from chatmq.notifier.sender import Sender

log = logging.getLogger(__name__)

LEASE_KEY = "chatmq:notifier:lease"
IDLE_S = 0.1  # poll interval when there was nothing to do
BUSY_S = 0.05  # between passes while busy: fewer, larger store writes (SQLite has one write lock)
PRUNE_EVERY_S = 600.0


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(base_s=settings.delivery_retry_base_s, cap_s=settings.delivery_retry_cap_s,
                       max_attempts=settings.delivery_max_attempts)  # fmt: skip


class Notifier:
    def __init__(self, settings: Settings, store: Store, redis_client: redis.Redis, *, name: str | None = None) -> None:
        self._settings = settings
        self._store = store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._ttl_ms = int(settings.notifier_lease_s * 1000)
        self._leases = Leases(redis_client, self.name, self._ttl_ms, key_of=lambda _partition: LEASE_KEY)
        presence = Presence(redis_client, int(settings.presence_ttl_s * 1000))
        self._http = httpx.Client(timeout=settings.delivery_timeout_s, follow_redirects=False,
                                  limits=httpx.Limits(max_connections=settings.notifier_concurrency * 2))
        gateway_url = settings.push_gateway_url or None  # an empty value (compose's default) is off too
        self.dispatcher = Dispatcher(store, presence, push_enabled=gateway_url is not None,
                                     preview=settings.push_preview, collapse_s=settings.push_collapse_s)
        self.sender = Sender(store, presence, self._http, retry_policy(settings),
                             gateway_url=gateway_url, concurrency=settings.notifier_concurrency,
                             collapse_s=settings.push_collapse_s)  # fmt: skip
        self.active = threading.Event()  # holding the lease

    def run(self, stop: threading.Event) -> None:
        valid_until = renew_at = 0.0
        pruned_at = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= renew_at:
                    valid_until, renew_at = self._hold_lease(now, valid_until)
                if now >= valid_until:
                    self.active.clear()
                    stop.wait(self._settings.notifier_lease_s / 5)
                    continue
                work = self._pass()
                if now - pruned_at > PRUNE_EVERY_S:
                    self._prune()
                    pruned_at = now
                stop.wait(BUSY_S if work else IDLE_S)
        finally:
            self.sender.close(self._settings.delivery_timeout_s)
            if self.active.is_set():
                self._leases.release(0)
            self.active.clear()
            self._http.close()

    def _hold_lease(self, now: float, valid_until: float) -> tuple[float, float]:
        ttl_s = self._ttl_ms / 1000
        try:
            held = self._leases.renew(0) if self.active.is_set() else self._leases.acquire(0)
        except redis.RedisError as exc:
            log.warning("notifier cannot reach Redis for its lease (%s)", exc)
            return valid_until, now + ttl_s / 5
        if not held:
            if self.active.is_set():
                log.warning("notifier %s lost its lease; standing by", self.name)
            self.active.clear()
            return 0.0, now + ttl_s / 5
        if not self.active.is_set():
            log.info("notifier %s active (lease %s)", self.name, LEASE_KEY)
            self.active.set()
        return now + ttl_s * 0.8, now + ttl_s / 3

    def _pass(self) -> int:
        try:
            return self.dispatcher.run_once() + self.sender.poll()
        except Exception as exc:  # the store or Redis failed: nothing was consumed, try again
            log.warning("notifier pass failed (%s); retrying", exc)
            return 0

    def _prune(self) -> None:
        keep_ms = int(self._settings.delivery_log_days * 86_400_000)
        try:
            removed = self._store.prune_deliveries(now_ms() - keep_ms)
        except Exception as exc:
            log.warning("pruning the delivery log failed (%s)", exc)
            return
        if removed:
            log.info("delivery log: %d deliveries older than %.1f days pruned", removed,
                     self._settings.delivery_log_days)


def run(settings: Settings) -> None:
    """Run the notifier until SIGINT or SIGTERM."""
    from chatmq.notifier.metrics import instrument, start_ops_server  # prometheus, only in the service

    # Its commits skip the fsync (SQLite): what a crash takes back is dispatched and sent again.
    store = open_store(settings.resolved_store_url, sync_every_commit=False)
    redis_client = redisconn.connect(settings.redis_url)
    notifier = Notifier(settings, store, redis_client)
    instrument(notifier)
    ops = start_ops_server(notifier, settings.host, settings.notifier_metrics_port, store, redis_client)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("notifier stopping (%s)", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("notifier %s started: push %s, lease %.1fs", notifier.name,
             settings.push_gateway_url or "off (CHATMQ_PUSH_GATEWAY_URL unset)", settings.notifier_lease_s)
    try:
        notifier.run(stop)
    finally:
        if ops is not None:
            ops.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
        redis_client.close()
