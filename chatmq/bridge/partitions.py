"""Partitioned bridge workers: this worker handles only the partitions whose lease it holds.

Every worker subscribes to all the bridge topics (amqtt and Mosquitto have no hash-sticky shared
subscriptions), so every worker receives every send. The gate below decides, per inbound message,
from the conversation's partition (``chatmq.core.partitions``):

- admit: we hold the partition's lease: hand it to the writer / receipt / presence thread now;
- hold: the partition is ours by assignment but the lease is not ours yet (its previous owner is
  draining, or its lease has not lapsed after a death): keep it, un-PUBACKed, and hand it over in
  arrival order the moment the lease is acquired;
- drop: another worker's partition: PUBACK it and forget it (that worker got its own copy).

A coordinator thread beats in the registry, computes the assignment (rendezvous hashing over the
live workers), acquires, renews and releases leases (``chatmq.core.leases``). Giving a partition up
is a hand-over, not a drop: keep admitting for a grace period (the new owner needs a tick to
notice and start holding), then stop admitting, wait until the writer and receipt threads settled
everything already admitted and the broker confirmed our publishes, and only then release the
lease. So one conversation never has two writers, and its ``chat/{conv}/msg`` publishes follow seq
across the hand-over. A send the dead worker took but never stored was never acked: the device's
outbox resends it and client_msg_id idempotency keeps it single.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from chatmq.bridge.worker import BatchWorker
from chatmq.core.leases import Leases, PartitionCountMismatch, WorkerRegistry
from chatmq.core.partitions import assignment, partition_of

log = logging.getLogger(__name__)

HOLD_MAX = 1000  # messages held for partitions being taken over; above it they are dropped (devices resend)
VALIDITY = 0.8  # act on a lease for this share of its TTL after the renewal was sent (clock drift, slow calls)

Action = Callable[[], None]


@dataclass(slots=True)
class _Release:
    """A partition we still hold but no longer should: admit until ``admit_until``, then drain, then release."""

    admit_until: float
    give_up_at: float  # release even if the broker has not confirmed our publishes (disconnected)
    marks: tuple[int, ...] | None = None  # each worker's submit count when admission stopped
    publishes: int | None = None  # the outbox's mark of our QoS 1 publishes to see confirmed


@dataclass(slots=True)
class _Held:
    deliver: Action
    drop: Action


@dataclass
class PartitionGate:
    """The partitions one worker may handle, kept in step with Redis by ``tick`` (its own thread)."""

    registry: WorkerRegistry
    leases: Leases
    partitions: int
    workers: list[BatchWorker] = field(default_factory=list)  # writer and receipts: drained before release
    publish_mark: Callable[[], int] = lambda: 0  # the outbox's mark of the QoS 1 publishes so far
    publishes_confirmed: Callable[[int], bool] = lambda mark: True
    ready: Callable[[], bool] = lambda: True  # e.g. connected and subscribed to the broker
    interval_s: float = 1.0
    on_change: Callable[[int], None] | None = None  # e.g. metrics: called with the owned count

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._assigned: frozenset[int] = frozenset()
        self._valid_until: dict[int, float] = {}  # leases we hold -> monotonic time we may act until
        self._held: dict[int, list[_Held]] = {}
        self._held_count = 0
        self._releases: dict[int, _Release] = {}
        self._leaving = False
        self._left = False
        self._redis_failing = False
        self._mismatch = False
        self._last_ready = float("-inf")  # when we last beat while connected to the broker
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-partitions", daemon=True)
        self.worker = self.registry.worker

    # --- called from the MQTT client's thread and the worker threads ------------------------------
    def offer(self, key: str, deliver: Action, drop: Action, *, holdable: bool = True) -> None:
        """Route one inbound message of conversation (or user) ``key``: deliver, hold or drop it."""
        partition = partition_of(key, self.partitions)
        with self._lock:
            if self._admitting(partition, time.monotonic()):
                self._flush_held(partition)  # anything held goes first: arrival order is kept
                deliver()
            elif holdable and partition in self._assigned and self._held_count < HOLD_MAX:
                self._held.setdefault(partition, []).append(_Held(deliver, drop))
                self._held_count += 1
            else:
                drop()

    def owns(self, key: str) -> bool:
        """True while we hold the lease of ``key``'s partition: checked again just before a store write."""
        valid_until = self._valid_until.get(partition_of(key, self.partitions))
        return valid_until is not None and valid_until > time.monotonic()

    def owns_partition(self, partition: int) -> bool:
        valid_until = self._valid_until.get(partition)
        return valid_until is not None and valid_until > time.monotonic()

    @property
    def owned(self) -> int:
        return len(self._valid_until)

    @property
    def held(self) -> int:
        return self._held_count

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a tick now (e.g. just connected: start holding our partitions at once)."""
        self._wake.set()

    def leave(self, timeout: float) -> bool:
        """Clean shutdown, first half: leave the registry so the others take over while we keep
        admitting for the grace period, then drain and release every lease. True if all released."""
        with self._lock:
            self._leaving = True
        self.wake()  # the coordinator thread leaves the registry: no beat of its can re-add us after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._valid_until:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Second half, after the writer stopped: end the thread, release whatever is still held."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            left = list(self._valid_until)
            self._valid_until.clear()
            for partition in list(self._held):
                self._drop_held(partition)
        for partition in left:
            with contextlib.suppress(redis.RedisError):  # else it lapses on its own after the lease TTL
                self.leases.release(partition)

    # --- the coordinator thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                if self._redis_failing:
                    log.info("partition leases: Redis reachable again")
                    self._redis_failing = False
            except redis.RedisError as exc:
                if not self._redis_failing:
                    log.warning("partition leases: Redis failed (%s); leases lapse unless renewed", exc)
                    self._redis_failing = True
            except Exception:
                log.exception("partition coordinator failed; retrying")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def tick(self) -> None:
        """One round: beat, compute the assignment, acquire / renew / hand over leases."""
        assigned = self._target()
        with self._lock:
            self._assigned = assigned
            for partition in [p for p in self._held if p not in assigned]:
                self._drop_held(partition)  # no longer ours to take: PUBACK, the new owner has its copy
        for partition in sorted(assigned):
            if partition in self._valid_until:
                with self._lock:
                    self._releases.pop(partition, None)  # it came back to us while we were handing it over
                self._renew(partition)
            else:
                self._acquire(partition)
        for partition in sorted(set(self._valid_until) - assigned):
            self._hand_over(partition)
        if self.on_change is not None:
            self.on_change(len(self._valid_until))

    def _target(self) -> frozenset[int]:
        if self._leaving:
            if not self._left:
                try:
                    self.registry.leave()
                except redis.RedisError as exc:
                    log.warning("could not leave the worker registry (%s); the others wait for our deadline", exc)
                self._left = True
            return frozenset()
        if not self.ready():
            # Not beating: the others take our partitions once our registry deadline passes. Until
            # then nobody else may take them, so a short broker blip keeps them (no churn).
            cut_off_for = time.monotonic() - self._last_ready
            return self._assigned if cut_off_for < self.registry.ttl_ms / 1000 * VALIDITY else frozenset()
        self._last_ready = time.monotonic()
        try:
            live = self.registry.beat()
        except PartitionCountMismatch as exc:
            if not self._mismatch:
                log.error("%s", exc)  # once: it lasts until the operator fixes the settings
                self._mismatch = True
            return frozenset()
        self._mismatch = False
        if self.worker not in live.workers:
            return frozenset()
        return assignment(self.worker, live.workers, self.partitions)

    def _acquire(self, partition: int) -> None:
        sent = time.monotonic()
        if not self.leases.acquire(partition):
            return  # the previous owner is still draining, or its lease has not lapsed yet
        with self._lock:
            self._valid_until[partition] = sent + self.leases.ttl_ms / 1000 * VALIDITY
            held = len(self._held.get(partition, ()))
            self._flush_held(partition)
        log.info("bridge worker %s gained partition %d (%d held messages handed on)", self.worker, partition, held)

    def _renew(self, partition: int) -> bool:
        sent = time.monotonic()
        if self.leases.renew(partition):
            with self._lock:
                self._valid_until[partition] = sent + self.leases.ttl_ms / 1000 * VALIDITY
                self._flush_held(partition)
            return True
        with self._lock:
            self._valid_until.pop(partition, None)
            self._releases.pop(partition, None)
        log.warning("bridge worker %s lost partition %d (its lease lapsed or was taken)", self.worker, partition)
        return False

    def _hand_over(self, partition: int) -> None:
        now = time.monotonic()
        release = self._releases.get(partition)
        if release is None:
            grace = 0.0 if not self.ready() else 2 * self.interval_s
            ttl = self.leases.ttl_ms / 1000
            release = _Release(now + grace, now + grace + 2 * ttl)
            with self._lock:
                self._releases[partition] = release
        if not self._renew(partition):
            return
        if now < release.admit_until:
            return
        if release.marks is None:
            with self._lock:  # offer() now drops this partition's messages: nothing more is submitted
                release.marks = tuple(worker.mark() for worker in self.workers)
        drained = all(w.settled(m) for w, m in zip(self.workers, release.marks, strict=True))
        if not drained and now < release.give_up_at:
            return
        if release.publishes is None:
            release.publishes = self.publish_mark()
        if not self.publishes_confirmed(release.publishes) and now < release.give_up_at:
            return
        self.leases.release(partition)
        with self._lock:
            self._valid_until.pop(partition, None)
            del self._releases[partition]
        log.info("bridge worker %s handed over partition %d", self.worker, partition)

    # --- under self._lock -------------------------------------------------------------------------
    def _admitting(self, partition: int, now: float) -> bool:
        valid_until = self._valid_until.get(partition)
        if valid_until is None or valid_until <= now:
            return False
        release = self._releases.get(partition)
        return release is None or now < release.admit_until

    def _flush_held(self, partition: int) -> None:
        for item in self._held.pop(partition, ()):
            self._held_count -= 1
            item.deliver()

    def _drop_held(self, partition: int) -> None:
        for item in self._held.pop(partition, ()):
            self._held_count -= 1
            item.drop()
