"""A blocking client of Mosquitto's ``$CONTROL/dynamic-security/v1`` API.

Commands go out as one JSON message (``{"commands": [...]}``) and come back, in order, as one
response message; a lock keeps one batch in flight per client, and correlation data tells our
answers from those to other admin clients (all of them share one response topic).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
BATCH = 100  # commands per message: keeps each request well under any packet limit


class DynsecError(Exception):
    """Mosquitto refused a command or did not answer; ``error`` is Mosquitto's own message."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error


def parse_url(url: str) -> tuple[str, int, str, str]:
    """``mqtt://ADMIN:PASSWORD@HOST:PORT`` → host, port, username, password."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname or not parts.username or parts.password is None:
        raise ValueError(f"expected mqtt://ADMIN:PASSWORD@HOST[:PORT], got {parts.scheme}://{parts.hostname}")
    return parts.hostname, parts.port or 1883, unquote(parts.username), unquote(parts.password)


class DynsecClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._host, self._port, user, password = parse_url(url)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._responses: queue.Queue[list[dict[str, Any]]] = queue.Queue()
        self._ready = threading.Event()
        self.generation = 0  # counts (re)connections; paho reconnects on its own after a drop
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"chatmq-dynsec-{os.getpid()}-{id(self):x}",
            protocol=mqtt.MQTTv311,
        )
        self._client.username_pw_set(user, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._ready.set()
        self._client.on_message = self._on_message
        self._client.on_disconnect = lambda *args: self._ready.clear()

    def __enter__(self) -> DynsecClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def connect(self) -> None:
        """Connect and subscribe to the responses; raises ConnectionError if refused or unreachable."""
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(self._timeout):
            self.close()
            raise ConnectionError(f"could not log in to Mosquitto's dynamic security at {self._host}:{self._port}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            log.error("Mosquitto refused the dynamic security admin: %s", reason_code)
            return
        self.generation += 1
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._responses.put(orjson.loads(msg.payload)["responses"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("unreadable dynamic security response: %r", msg.payload[:200])

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run commands in order; each answer is ``{"command", "error"?, "data"?}``. Never raises
        for a refused command (the caller decides), only for no answer at all."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), BATCH):
            answers.extend(self._run_batch(commands[start:start + BATCH]))
        return answers

    def _run_batch(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Every admin connection sees every response, so each command carries correlation data
        # naming this batch and answers to anyone else's batches are skipped.
        tag = uuid.uuid4().hex
        tagged = [{**command, "correlationData": f"{tag}:{i}"} for i, command in enumerate(commands)]
        with self._lock:
            info = self._client.publish(REQUEST_TOPIC, orjson.dumps({"commands": tagged}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DynsecError(commands[0]["command"], f"publish failed ({mqtt.error_string(info.rc)})")
            deadline = time.monotonic() + self._timeout
            while True:
                try:
                    answers = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise DynsecError(commands[0]["command"], "no answer from Mosquitto") from None
                if answers and str(answers[0].get("correlationData", "")).startswith(f"{tag}:"):
                    break
        if len(answers) != len(commands):
            raise DynsecError(commands[0]["command"], f"{len(answers)} answers to {len(commands)} commands")
        return answers

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        """One command; raises DynsecError if refused. Returns its ``data`` (or {})."""
        (answer,) = self.run([{"command": command, **args}])
        if answer.get("error"):
            raise DynsecError(command, str(answer["error"]))
        return answer.get("data") or {}
