"""A bare MQTT device that records when the broker closes its connection, and stack look-ups."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chatmq.cli.stackinfo import read_stack
from tests.stack import PASSWORD, Stack

KICK_DEADLINE_S = 2.0


class Device:
    """Connects once (no automatic reconnect) so a server-side close is observable."""

    def __init__(self, stack: Stack, user: str, password: str = PASSWORD, client_id: str | None = None) -> None:
        self.client_id = client_id or f"{user}.dev{time.monotonic_ns() % 100000}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, reconnect_on_failure=False)
        self.client.username_pw_set(user, password)
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.closed = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_disconnect = lambda *_a: self.closed.set()
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(list(codes))
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", stack.mqtt_port, keepalive=30)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=10)

    @property
    def accepted(self) -> bool:
        return not self.reason.is_failure

    def subscribe(self, topic: str) -> bool:
        self.client.subscribe(topic, 1)
        return not any(code.is_failure for code in self.subacks.get(timeout=10))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def send(self, conv: str, user: str, client_msg_id: str, body: str) -> None:
        self.publish(f"chat/{conv}/send/{user}", orjson.dumps({"client_msg_id": client_msg_id, "body": body}))

    def expect(self, topic: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got, payload = self.received.get(timeout=left)
            if got == topic:
                return payload
        raise queue.Empty(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metrics_url(stack: Stack, component: str) -> str:
    info = read_stack(stack.data_dir)
    return f"http://127.0.0.1:{info[f'{component}_metrics_port']}"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get_json(url: str) -> tuple[int, Any]:
    status, text = get(url)
    return status, json.loads(text)
