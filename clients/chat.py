"""A small, typed chatmq device client on paho-mqtt.

It gets the protocol right for the caller: the presence last will with a fresh connection id,
heartbeats, the subscriptions that joining a conversation needs, and a Future per send that resolves
with the server's ack. Incoming messages, typing and presence arrive as Events on one queue.
"""

from __future__ import annotations

import queue
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chatcore import protocol
from chatcore.protocol import TopicKind, parse_topic


class ConnectRefused(ConnectionError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ack:
    client_msg_id: str
    conv: str
    status: Literal["received", "rejected"]
    seq: int | None = None
    ts: int | None = None
    error: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: TopicKind  # MSG, TYPING, USER_PRESENCE, ...
    topic: str
    payload: dict[str, Any]


class ChatClient:
    """One device connection. Use as a context manager or call connect()/close()."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        device: str = "default",
        transport: Literal["tcp", "websockets"] = "tcp",
        heartbeat_interval: float = 30.0,
        keepalive: int = 60,
    ) -> None:
        self.user, self.device = user, device
        self.host, self.port, self.keepalive = host, port, keepalive
        self.heartbeat_interval = heartbeat_interval
        self.conn = uuid.uuid4().hex  # identifies this connection in presence, so a late will is ignored
        self.events: queue.Queue[Event] = queue.Queue()
        self._pending: dict[str, Future[Ack]] = {}
        self._lock = threading.Lock()
        self._connack = threading.Event()
        self._connect_refusal: str | None = None
        self._suback: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._stop_heartbeat = threading.Event()
        self._mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}.{device}", transport=transport)
        self._mqtt.username_pw_set(user, password)
        self._mqtt.will_set(
            protocol.device_presence_topic(user, device),
            orjson.dumps({"status": "offline", "conn": self.conn}),
            qos=protocol.QOS_PRESENCE,
        )
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_message = self._on_message
        self._mqtt.on_subscribe = self._on_subscribe

    # --- lifecycle ----------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> ChatClient:
        self._mqtt.connect(self.host, self.port, keepalive=self.keepalive)
        self._mqtt.loop_start()
        if not self._connack.wait(timeout) or self._connect_refusal is not None:
            self._mqtt.loop_stop()
            raise ConnectRefused(self._connect_refusal or "timed out waiting for CONNACK")
        self._subscribe(protocol.ack_topic(self.user), protocol.QOS_ACK)
        threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.device}", daemon=True).start()
        return self

    def close(self, *, abrupt: bool = False) -> None:
        """Disconnect. ``abrupt=True`` drops the socket without DISCONNECT, so the will fires."""
        self._stop_heartbeat.set()
        if abrupt:
            sock = self._mqtt.socket()
            if sock is not None:
                sock.close()
        else:
            self._publish_presence("offline")
            self._mqtt.disconnect()
        self._mqtt.loop_stop()

    def __enter__(self) -> ChatClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- conversations --------------------------------------------------------------------------
    def join(self, conv: str) -> None:
        """Subscribe to a conversation's messages and typing indicators."""
        self._subscribe(protocol.msg_topic(conv), protocol.QOS_MSG)
        self._subscribe(f"chat/{conv}/typing/+", protocol.QOS_TYPING)

    def leave(self, conv: str) -> None:
        self._mqtt.unsubscribe([protocol.msg_topic(conv), f"chat/{conv}/typing/+"])

    def watch_presence(self, user: str) -> None:
        self._subscribe(protocol.presence_topic(user), protocol.QOS_PRESENCE)

    def send(self, conv: str, body: str, *, client_msg_id: str | None = None,
             attachments: list[dict[str, Any]] | None = None) -> Future[Ack]:
        """Publish a message; the Future resolves with the server's received or rejected ack."""
        cmid = client_msg_id or uuid.uuid4().hex
        future: Future[Ack] = Future()
        with self._lock:
            self._pending[cmid] = future
        payload: dict[str, Any] = {"client_msg_id": cmid, "body": body}
        if attachments:
            payload["attachments"] = attachments
        self._mqtt.publish(protocol.send_topic(conv, self.user), orjson.dumps(payload), qos=protocol.QOS_SEND)
        return future

    def typing(self, conv: str, typing: bool = True) -> None:
        self._mqtt.publish(protocol.typing_topic(conv, self.user), orjson.dumps({"typing": typing}),
                           qos=protocol.QOS_TYPING)

    def next_event(self, timeout: float = 5.0) -> Event:
        """The next incoming event; raises queue.Empty after ``timeout`` seconds."""
        return self.events.get(timeout=timeout)

    # --- internals ----------------------------------------------------------------------------
    def _subscribe(self, topic: str, qos: int) -> None:
        done, codes = threading.Event(), []
        with self._lock:  # paho may deliver the SUBACK before subscribe() returns its mid
            _, mid = self._mqtt.subscribe(topic, qos)
            self._suback[mid] = (done, codes)
        if not done.wait(10) or any(code.is_failure for code in codes):
            raise PermissionError(f"subscription to {topic} refused")

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reason_codes: list[Any], _p: Any) -> None:
        with self._lock:
            done, codes = self._suback.pop(mid, (None, []))
        codes.extend(reason_codes)
        if done is not None:
            done.set()

    def _publish_presence(self, status: str) -> None:
        self._mqtt.publish(
            protocol.device_presence_topic(self.user, self.device),
            orjson.dumps({"status": status, "conn": self.conn}),
            qos=protocol.QOS_PRESENCE,
        )

    def _heartbeat(self) -> None:
        self._publish_presence("online")
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            self._publish_presence("online")

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_refusal = str(reason)
        self._connack.set()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(message.topic)
        if parsed is None:
            return
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if parsed.kind is TopicKind.ACK:
            with self._lock:
                future = self._pending.pop(payload.get("client_msg_id", ""), None)
            if future is not None:
                fields = {k: payload.get(k) for k in ("seq", "ts", "error")}
                future.set_result(Ack(payload["client_msg_id"], payload["conv"], payload["status"], **fields))
            return
        self.events.put(Event(parsed.kind, message.topic, payload))
