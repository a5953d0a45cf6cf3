"""Device presence in, retained user presence out.

Devices publish ``presence/{user}/{device}`` (online as a heartbeat, offline explicitly or through
their last will). Each event is one Redis script call, so this runs on its own thread rather than
on the MQTT client's thread; the same thread sweeps expired heartbeats every second. Whenever a
user's aggregate changes, the retained ``presence/{user}`` is republished so late subscribers see
the current state at once.

Presence is soft state: a Redis error is logged and the event dropped (the next heartbeat repairs
it), because an un-PUBACKed event would hold one of the broker's few in-flight slots for the
bridge and stall the chat sends behind it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from chatmq.bridge.outbox import Outbox
from chatmq.core.presence import Presence, TooManyDevices, UserPresence
from chatmq.core.protocol import QOS_PRESENCE, PayloadError, parse_device_presence, presence_topic

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
REFUSAL_LOG_S = 60.0  # a user's refused devices are logged once a minute, not per heartbeat


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    user: str
    device: str
    payload: bytes
    mid: int
    qos: int


def now_ms() -> int:
    return int(time.time() * 1000)


class PresenceTracker:
    def __init__(
        self, presence: Presence, outbox: Outbox, sweep_interval_s: float = SWEEP_INTERVAL_S,
        owns_user: Callable[[str], bool] | None = None,
    ) -> None:
        self._presence = presence
        self._owns_user = owns_user  # partitioned workers sweep only the users they handle
        self._outbox = outbox
        self._sweep_interval = sweep_interval_s
        self._queue: queue.Queue[DeviceEvent] = queue.Queue()
        self._stopping = threading.Event()
        self._redis_failing = False
        self._refusals_logged: dict[str, float] = {}  # user -> when their last refusal was logged
        self._thread = threading.Thread(target=self._run, name="bridge-presence", daemon=True)
        self.on_update: Callable[[bool], None] | None = None  # e.g. metrics: called with online/offline

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, event: DeviceEvent) -> None:
        self._queue.put(event)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Handle the events already queued, then end the thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        next_sweep = time.monotonic() + self._sweep_interval
        while True:
            try:
                event = self._queue.get(timeout=max(0.0, min(next_sweep - time.monotonic(), 0.1)))
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
            elif self._stopping.is_set():
                return
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self._sweep_interval
                self._guarded("presence sweep", self._sweep)

    def _handle(self, event: DeviceEvent) -> None:
        try:
            state = parse_device_presence(event.payload)
        except PayloadError as exc:
            log.info("dropped bad presence from %s/%s: %s", event.user, event.device, exc.message)
        else:
            self._guarded("presence update", partial(self._apply, event, state.status == "online", state.conn))
        self._outbox.ack(event.mid, event.qos)

    def _apply(self, event: DeviceEvent, online: bool, conn: str) -> None:
        # An offline whose conn is not the device's current one is a late will: the script ignores it.
        transition = self._presence.device_online if online else self._presence.device_offline
        try:
            self._announce([transition(event.user, event.device, conn, now_ms())])
        except TooManyDevices as exc:
            self._refused(exc)
            return
        if self.on_update is not None:
            self.on_update(online)

    def _refused(self, exc: TooManyDevices) -> None:
        now = time.monotonic()
        if now - self._refusals_logged.get(exc.user, -REFUSAL_LOG_S) < REFUSAL_LOG_S:
            return
        if len(self._refusals_logged) > 10_000:
            self._refusals_logged.clear()
        self._refusals_logged[exc.user] = now
        log.warning("refused presence of %s/%s: %d live devices already (CHATMQ_PRESENCE_DEVICES_PER_USER); "
                    "its heartbeats are dropped while the others live", exc.user, exc.device, exc.limit)

    def _sweep(self) -> None:
        self._announce(self._presence.expire(now_ms(), accept=self._owns_user))

    def _announce(self, changes: Sequence[UserPresence | None]) -> None:
        for change in changes:
            if change is not None:
                self._outbox.publish(presence_topic(change.user), change.to_payload(), QOS_PRESENCE, retain=True)

    def _guarded(self, what: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:
            if not self._redis_failing:
                log.warning("%s failed: %s", what, exc)
                self._redis_failing = True
            return
        if self._redis_failing:
            log.info("presence recovered")
            self._redis_failing = False
