"""Everything the bridge sends to the broker goes through here, so shutdown can wait for it.

paho queues publishes in memory and sends them from its network thread; a process that
disconnects right after ``publish()`` may lose what was still queued. The outbox remembers the
QoS 1 publishes not yet confirmed by the broker so ``flush()`` can wait for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from chatmq.core.protocol import encode

_PRUNE_MIN = 256


class Outbox:
    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self._prune_at = _PRUNE_MIN

    def publish(
        self, topic: str, payload: dict[str, Any], qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, encode(payload), qos=qos, retain=retain)
        if qos > 0:
            with self._lock:
                self._pending.append(info)
                if len(self._pending) >= self._prune_at:  # amortised: a scan per publish would be O(n^2)
                    self._pending = [p for p in self._pending if not _confirmed(p)]
                    self._prune_at = max(_PRUNE_MIN, 2 * len(self._pending))
        return info

    def pending(self) -> list[mqtt.MQTTMessageInfo]:
        """The QoS 1 publishes not confirmed yet (a snapshot: see ``all_confirmed``)."""
        with self._lock:
            self._pending = [p for p in self._pending if not _confirmed(p)]
            return list(self._pending)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK an inbound message (manual acks): the broker may now forget it."""
        if qos > 0:
            self._client.ack(mid, qos)

    def flush(self, timeout: float) -> bool:
        """Wait until the broker confirmed every QoS 1 publish; False if the timeout passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending, self._pending = self._pending, []
        for info in pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return all(_confirmed(p) for p in pending)
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError):  # not connected or refused: paho keeps it queued
                continue
        return all(_confirmed(p) for p in pending)


def all_confirmed(infos: list[mqtt.MQTTMessageInfo]) -> bool:
    return all(_confirmed(info) for info in infos)


def _confirmed(info: mqtt.MQTTMessageInfo) -> bool:
    """is_published() raises for a publish made while disconnected; paho still holds and resends
    such a QoS 1 message after reconnecting, so it simply counts as not confirmed yet."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
