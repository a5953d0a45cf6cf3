"""A small synchronous wrapper over a real paho-mqtt 2.x client, for tests against a live broker."""

from __future__ import annotations

import itertools
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

NOT_AUTHORIZED = 135  # paho's reason code for an MQTT 3.1.1 CONNACK return code 5
SUBACK_FAILURE = 0x80
_ids = itertools.count(1)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int = field(default=0, compare=False)
    retain: bool = field(default=False, compare=False)
    dup: bool = field(default=False, compare=False)


class Mqtt:
    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        transport: str = "tcp",
        host: str = "127.0.0.1",
        clean_session: bool = True,
        keepalive: int = 60,
        manual_ack: bool = False,
    ) -> None:
        self.host, self.port, self.keepalive = host, port, keepalive
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t{next(_ids)}-{time.monotonic_ns()}" if client_id is None else client_id,
            protocol=paho.MQTTv311,
            transport=transport,  # type: ignore[arg-type]
            clean_session=clean_session,
            manual_ack=manual_ack,
        )
        self.session_present: bool | None = None
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self._connacks: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: dict[int, list[int]] = {}
        self.messages: queue.Queue[Received] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho callbacks run on its network thread
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            client.disconnect()  # else paho's network thread keeps retrying the login
        self.session_present = bool(flags.session_present)
        self._connacks.put(rc)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        self._subacks[mid] = [code.value for code in codes]

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup)))

    def connect(self, timeout: float = 5.0) -> int:
        """Connect and return the CONNACK reason code value (0 = accepted)."""
        self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        rc = self._connacks.get(timeout=timeout)
        if rc.is_failure:
            self.stop()
        return int(rc.value)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> int:
        """The SUBACK code for one filter: the granted QoS or 0x80."""
        result, mid = self.client.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + timeout
        while mid not in self._subacks:
            assert time.monotonic() < deadline, f"no SUBACK for {topic}"
            time.sleep(0.005)
        return self._subacks.pop(mid)[0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def expect(self, timeout: float = 3.0) -> Received:
        return self.messages.get(timeout=timeout)

    def wait_for(self, payload: bytes, timeout: float = 3.0) -> list[Received]:
        """Everything received up to and including the message carrying ``payload``."""
        seen: list[Received] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{payload!r} not received; got {seen}"
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            seen.append(msg)
            if msg.payload == payload:
                return seen

    def drain(self, settle: float = 0.1) -> list[Received]:
        time.sleep(settle)
        out: list[Received] = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a device losing its network would."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
