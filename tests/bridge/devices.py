"""A test device: a plain paho client that records everything it receives."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt

_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Device:
    def __init__(self, host: str, port: int, name: str, subscriptions: Iterable[str] = ()) -> None:
        self._cond = threading.Condition()
        self.received: list[Received] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{name}-{next(_ids)}", protocol=mqtt.MQTTv311
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        subs = list(subscriptions)
        if subs:
            self.client.subscribe([(s, 1) for s in subs])
            if not self._subscribed.wait(5):
                raise TimeoutError(f"device {name} was not subscribed to {subs}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | dict[str, Any], qos: int = 1) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.client.publish(topic, raw, qos=qos).wait_for_publish(5)

    def on(self, topic: str) -> list[Any]:
        """JSON payloads received on exactly ``topic``, in arrival order."""
        with self._cond:
            return [r.json() for r in self.received if r.topic == topic]

    def wait_for(self, check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; received: {self.received[-10:]}")
                self._cond.wait(min(left, 0.1))

    def wait_count(self, topic: str, count: int, timeout: float = 10.0) -> list[Any]:
        self.wait_for(lambda: len(self.on(topic)) >= count, timeout, f"{count} messages on {topic}")
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
