"""Delivering: POST each due delivery, record the outcome, retry with back-off, dead-letter.

At least once: a delivery stays pending in the store until the receiver answered 2xx, so a
sender killed mid-request sends it again after a restart, with the same idempotency key
(``Idempotency-Key`` for the push gateway, ``X-Chatmq-Delivery`` for webhooks). Deliveries with
one order key go out one at a time and in order (the store hands out only the oldest pending
one per key, and a key with an attempt in flight is skipped here).

Before a push notification goes out it is checked again: a member who came online, or read the
conversation past it, since it was decided gets none (cancelled). The badge counts are read now,
not when the message was stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import orjson

from chatmq.core import push, webhooks
from chatmq.core.presence import Presence
from chatmq.core.retry import RetryPolicy
from chatmq.core.store.base import (
    DELIVERED,
    DELIVERY_CANCELLED,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    DELIVERY_PUSH,
    DELIVERY_WEBHOOK,
    Attempt,
    Delivery,
    Store,
    Webhook,
    now_ms,
)

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # DELIVERED, DELIVERY_PENDING (retry), DELIVERY_DEAD or DELIVERY_CANCELLED
    error: str | None = None


class Sender:
    def __init__(
        self,
        store: Store,
        presence: Presence,
        http: httpx.Client,
        policy: RetryPolicy,
        *,
        gateway_url: str | None,
        concurrency: int = 16,
        collapse_s: float = 0.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._collapse_ms = int(collapse_s * 1000)
        self._presence = presence
        self._http = http
        self._policy = policy
        self._gateway_url = gateway_url
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notifier-send")
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # delivery id -> order key, until its outcome is recorded
        self._finished: list[tuple[Delivery, Outcome, float]] = []  # attempts done, outcome not yet recorded
        self._hooks: dict[str, Webhook] = {}
        self.after_attempt: Callable[[Delivery, Outcome, float], None] | None = None  # metrics

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def poll(self, limit: int = 100) -> int:
        """Record the attempts that finished, then start every due delivery there is room for;
        returns how many attempts were recorded and started."""
        recorded = self.record_finished()
        with self._lock:
            busy_ids, busy_keys = list(self._in_flight), set(self._in_flight.values())
        due = self._store.due_deliveries(self._clock(), limit, exclude=busy_ids)
        if any(d.channel == DELIVERY_WEBHOOK for d in due):  # subscriptions as they are now
            hooks = {hook.id: hook for hook in self._store.webhooks()}
            with self._lock:
                self._hooks = hooks
        started = 0
        for delivery in due:
            if delivery.order_key in busy_keys:
                continue  # the key's previous delivery is still on the wire: keep the order
            if not self._slots.acquire(blocking=False):
                break
            busy_keys.add(delivery.order_key)
            with self._lock:
                self._in_flight[delivery.id] = delivery.order_key
            self._pool.submit(self._attempt, delivery)
            started += 1
        return recorded + started

    def close(self, timeout: float = 10.0) -> None:
        """Let attempts in flight finish (each is bounded by the HTTP timeout), record them, stop."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            self.record_finished()
            time.sleep(0.02)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- one attempt (pool thread) --------------------------------------------------------------
    def _attempt(self, delivery: Delivery) -> None:
        started = time.monotonic()
        try:
            outcome = self._deliver(delivery)
        except Exception as exc:  # the store failed mid-check: try again later
            log.warning("delivery %s: attempt failed before sending (%s)", delivery.id, exc)
            outcome = Outcome(DELIVERY_PENDING, f"internal: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        with self._lock:
            self._finished.append((delivery, outcome, time.monotonic() - started))
        self._slots.release()

    # --- recording (the polling thread) ---------------------------------------------------------
    def record_finished(self) -> int:
        """Write every finished attempt's outcome in one store write. An attempt stays "in flight"
        (its delivery is not handed out again) until its outcome is recorded."""
        with self._lock:
            finished, self._finished = self._finished, []
        if not finished:
            return 0
        now = self._clock()
        attempts = [self._recorded(delivery, outcome, now) for delivery, outcome, _ in finished]
        try:
            current = self._store.record_attempts(attempts)
            for attempt, (delivery, _, _), ok in zip(attempts, finished, current, strict=True):
                if not ok:
                    # A newer message collapsed into it while it was on the wire: that one still has
                    # to go, once the collapse window has passed if this attempt was delivered.
                    shown = attempt.state == DELIVERED and delivery.channel == DELIVERY_PUSH
                    if shown:
                        self._uncount_shown(delivery)
                    self._store.set_delivery_state(delivery.id, DELIVERY_PENDING,
                                                   next_at=now + (self._collapse_ms if shown else 0))
        except Exception as exc:  # keep them: recorded on the next poll, still not handed out again
            log.warning("could not record %d delivery attempts (%s); retrying", len(finished), exc)
            with self._lock:
                self._finished[:0] = finished
            return 0
        with self._lock:
            for delivery, _, _ in finished:
                self._in_flight.pop(delivery.id, None)
        if self.after_attempt is not None:
            for delivery, outcome, seconds in finished:
                self.after_attempt(delivery, outcome, seconds)
        return len(finished)

    def _uncount_shown(self, sent: Delivery) -> None:
        """The messages the delivered attempt showed are no longer news for the payload that
        replaced it meanwhile: its ``collapsed`` counts only the ones after."""
        current = self._store.get_delivery(sent.id)
        if current is None or current.payload.get("type") != push.NOTIFY_MESSAGE:
            return
        left = int(current.payload.get("collapsed", 1)) - int(sent.payload.get("collapsed", 1))
        self._store.replace_pending_payload(sent.id, {**current.payload, "collapsed": max(1, left)})

    def _recorded(self, delivery: Delivery, outcome: Outcome, now: int) -> Attempt:
        state, next_at = outcome.state, now
        if state == DELIVERY_PENDING:
            retry_at = self._policy.schedule(delivery.attempts + 1, now)
            if retry_at is None:
                state = DELIVERY_DEAD
                log.warning("delivery %s dead after %d attempts: %s", delivery.id, delivery.attempts + 1, outcome.error)
            else:
                next_at = retry_at
        return Attempt(delivery.id, delivery.version, state, next_at, outcome.error)

    def _deliver(self, delivery: Delivery) -> Outcome:
        if delivery.channel == DELIVERY_PUSH:
            return self._push(delivery)
        return self._webhook(delivery)

    # --- push -------------------------------------------------------------------------------------
    def _push(self, delivery: Delivery) -> Outcome:
        draft = delivery.payload
        if self._gateway_url is None:
            return Outcome(DELIVERY_PENDING, "no push gateway configured (CHATMQ_PUSH_GATEWAY_URL)")
        user, conv, seq = draft["user"], draft["conv"], int(draft["seq"])
        device = draft["device"]
        registered = {(t.device, t.platform, t.token) for t in self._store.push_targets([user])}
        if (device["device"], device["platform"], device["token"]) not in registered:
            return Outcome(DELIVERY_CANCELLED, "the device's push target was removed or replaced")  # e.g. logout
        markers = self._store.markers_of(user)
        read = markers[conv].read_seq if conv in markers else 0
        if draft["type"] == push.NOTIFY_MESSAGE:
            if read >= seq:
                return Outcome(DELIVERY_CANCELLED, "read meanwhile")
            if self._presence.online([user], self._clock()):
                return Outcome(DELIVERY_CANCELLED, "online meanwhile")
        unread_total, conv_unread = self._unread(user, markers)
        body = push.encode(push.notification(draft, unread_total, conv_unread.get(conv, 0)))
        headers = {"Content-Type": "application/json", "User-Agent": push.USER_AGENT,
                   push.IDEMPOTENCY_HEADER: push.idempotency_key(draft)}  # fmt: skip
        try:
            response = self._http.post(self._gateway_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(DELIVERY_PENDING, _describe(exc))
        if response.is_success:
            dead = push.rejected_tokens(response.content)
            if dead:
                removed = self._store.delete_push_tokens(device["platform"], dead)
                log.info("push gateway rejected %d tokens of %s; %d targets removed", len(dead), user, removed)
            return Outcome(DELIVERED)
        error = f"gateway answered {response.status_code}: {response.text[:MAX_ERROR_CHARS]}"
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            return Outcome(DELIVERY_PENDING, error)
        return Outcome(DELIVERY_DEAD, error)  # the gateway refuses this request: retrying will not help

    def _unread(self, user: str, markers: dict) -> tuple[int, dict[str, int]]:
        """The badge: messages by others after the user's read marker, in all conversations."""
        per_conv: dict[str, int] = {}
        for conversation in self._store.list_conversations(member=user):
            read = markers[conversation.id].read_seq if conversation.id in markers else 0
            if conversation.last_seq > read:
                per_conv[conversation.id] = self._store.count_unread(conversation.id, user, read)
        return sum(per_conv.values()), per_conv

    # --- webhooks ---------------------------------------------------------------------------------
    def _webhook(self, delivery: Delivery) -> Outcome:
        hook = self._webhook_of(delivery.target)
        if hook is None:
            return Outcome(DELIVERY_CANCELLED, "the subscription was removed")
        body = orjson.dumps(delivery.payload)
        headers = webhooks.signed_headers(hook.secret, int(time.time()), body, delivery.payload["type"], delivery.id)
        try:
            response = self._http.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(DELIVERY_PENDING, _describe(exc))
        if response.is_success:
            return Outcome(DELIVERED)
        return Outcome(DELIVERY_PENDING, f"answered {response.status_code}: {response.text[:MAX_ERROR_CHARS]}")

    def _webhook_of(self, webhook_id: str) -> Webhook | None:
        with self._lock:
            return self._hooks.get(webhook_id)


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
