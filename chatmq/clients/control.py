"""The broker's admin channel from the operator's side (chatmq.core.control): a paho connection that
sends a request on ``$CONTROL/chatmq/v1/request`` and waits for its answer.

Used by the `chatmq` operator commands (chatmq/cli/adminclient.py) and by the admin HTTP API
(chatmq/api/admin.py). The caller supplies the credentials: the admin identity with an admin token.
"""

from __future__ import annotations

import queue
import secrets
import threading
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chatmq.core.control import REQUEST_TOPIC, RESPONSE_FILTER, Command, encode_request, response_topic

CONNECT_TIMEOUT_S = 5.0


class ControlUnreachable(Exception):
    """The broker could not be reached, did not answer, or has no admin channel."""


class ControlRefused(Exception):
    """The broker refused the login, a subscription or the request (``code`` says which)."""

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # the broker's reason code, for a refused login


class Session:
    """A paho connection with received messages on a queue; raises on a refused or missing CONNACK."""

    def __init__(self, host: str, port: int, username: str, password: str, *, client_id_prefix: str,
                 timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"{client_id_prefix}-{secrets.token_hex(4)}", clean_session=True)
        self.client.username_pw_set(username, password)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack: queue.Queue[Any] = queue.Queue()
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self.lost = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self._connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self._subacks.put(list(codes))
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.client.on_disconnect = lambda *_a: self.lost.set()
        where = f"{host}:{port}"
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ControlUnreachable(f"the broker at {where} is not reachable ({exc.strerror or exc})") from None
        self.client.loop_start()
        try:
            reason = self._connack.get(timeout=timeout_s)
        except queue.Empty:
            self.close()
            raise ControlUnreachable(f"the broker at {where} did not answer CONNECT") from None
        if reason.is_failure:
            self.close()
            raise ControlRefused("login_refused", f"the broker at {where} refused the login of {username} ({reason})",
                                 str(reason))

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.client.subscribe(topic_filter, qos)
        try:
            codes = self._subacks.get(timeout=self.timeout_s)
        except queue.Empty:
            raise ControlUnreachable("the broker did not answer SUBSCRIBE") from None
        if any(code.is_failure for code in codes):
            raise ControlRefused("subscribe_refused", f"the broker refused the subscription to {topic_filter}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ControlClient(Session):
    """Request/response over the admin channel, logged in as the admin identity."""

    def __init__(self, host: str, port: int, username: str, token: str, *,
                 timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        super().__init__(host, port, username, token, client_id_prefix="chatmq-admin", timeout_s=timeout_s)
        try:
            self.subscribe(RESPONSE_FILTER)
        except BaseException:
            self.close()
            raise

    def request(self, command: Command | str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        command = Command(command)
        request_id = secrets.token_hex(8)
        self.client.publish(REQUEST_TOPIC, encode_request(request_id, command, args), qos=1)
        expected = response_topic(request_id)
        while True:
            try:
                topic, payload = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise ControlUnreachable(f"no answer to {command.value!r} within {timeout:g} s "
                                         "(is this broker a chatmq broker with its admin channel?)") from None
            if topic == expected:
                break
        answer = orjson.loads(payload)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise ControlRefused(str(error.get("code", "error")), str(error.get("message", "request failed")))
        return answer.get("result")

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
