"""Talking to a running stack from the operator commands: where it is, and the admin channel.

Where: ``--broker-host/--broker-port``, else CHATMQ_BROKER_HOST/CHATMQ_BROKER_PORT, else what
``chatmq up`` recorded in the data dir (chatmq.stackinfo), else the Settings defaults.
Who: the admin identity, with a short-lived admin token signed by the deployment's key (the
data dir's secret.key or CHATMQ_SECRET_KEY), exactly as the bridge's service token is minted.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chatcore.auth import issue_token
from chatcore.config import ADMIN_USER, SERVICE_USER, Settings
from chatcore.control import REQUEST_TOPIC, RESPONSE_FILTER, Command, encode_request, response_topic
from chatmq.settings_opts import make_settings
from chatmq.stackinfo import read_stack
from chatmq.supervisor import recorded_redis_url

EXIT_ERROR = 1  # the command ran and failed: unknown id, refused request
EXIT_UNREACHABLE = 3  # the stack (broker, Redis, metrics port) is not running or not reachable
TOKEN_TTL_S = 300
CONNECT_TIMEOUT_S = 5.0


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE


class RequestFailed(click.ClickException):
    """The broker answered with an error (``code`` is the admin channel's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    settings: Settings
    host: str
    port: int
    stack: dict[str, Any]

    @property
    def redis_url(self) -> str:
        if os.environ.get("CHATMQ_REDIS_URL"):
            return self.settings.redis_url
        return str(self.stack.get("redis_url") or recorded_redis_url(self.settings.data_dir) or self.settings.redis_url)

    def metrics_url(self, component: str) -> str | None:
        port = self.stack.get(f"{component}_metrics_port") or getattr(self.settings, f"{component}_metrics_port")
        host = self.stack.get("host") or (self.host if component == "broker" else "127.0.0.1")
        return f"http://{host}:{port}/metrics" if port else None


def resolve(data_dir: Path | None, broker_host: str | None = None, broker_port: int | None = None,
            store_url: str | None = None) -> Target:
    settings = make_settings(data_dir=data_dir, store_url=store_url)
    stack = read_stack(settings.data_dir)
    host = broker_host or os.environ.get("CHATMQ_BROKER_HOST") or stack.get("host") or settings.broker_host
    port = broker_port or _env_int("CHATMQ_BROKER_PORT") or stack.get("mqtt_port") or settings.resolved_broker_port
    return Target(settings, str(host), int(port), stack)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


class MqttSession:
    """A paho connection as the admin or the service identity, with received messages on a queue."""

    def __init__(self, target: Target, *, service: bool = False) -> None:
        secret = target.settings.load_secret()
        user = SERVICE_USER if service else ADMIN_USER
        token = issue_token(secret, user, TOKEN_TTL_S, service=service, admin=not service).token
        prefix = "chatmq-tail" if service else "chatmq-admin"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{secrets.token_hex(4)}",
                                  clean_session=True)
        self.client.username_pw_set(user, token)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack: queue.Queue[Any] = queue.Queue()
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self.lost = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self._connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self._subacks.put(list(codes))
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.client.on_disconnect = lambda *_a: self.lost.set()
        where = f"{target.host}:{target.port}"
        try:
            self.client.connect(target.host, target.port, keepalive=30)
        except OSError as exc:
            raise Unreachable(f"the broker at {where} is not reachable ({exc.strerror or exc}); "
                              "is the stack running (`chatmq up`)?") from None
        self.client.loop_start()
        try:
            reason = self._connack.get(timeout=CONNECT_TIMEOUT_S)
        except queue.Empty:
            self.close()
            raise Unreachable(f"the broker at {where} did not answer CONNECT") from None
        if reason.is_failure:
            self.close()
            raise click.ClickException(
                f"the broker at {where} refused the {'service' if service else 'admin'} identity ({reason}); "
                "does this data dir (or CHATMQ_SECRET_KEY) hold the stack's secret key?"
            )

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.client.subscribe(topic_filter, qos)
        try:
            codes = self._subacks.get(timeout=CONNECT_TIMEOUT_S)
        except queue.Empty:
            raise Unreachable("the broker did not answer SUBSCRIBE") from None
        if any(code.is_failure for code in codes):
            raise click.ClickException(f"the broker refused the subscription to {topic_filter}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AdminChannel(MqttSession):
    """Request/response over ``$CONTROL/chatmq/v1/...`` (chatcore.control)."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.subscribe(RESPONSE_FILTER)

    def request(self, command: Command, args: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        request_id = secrets.token_hex(8)
        self.client.publish(REQUEST_TOPIC, encode_request(request_id, command, args), qos=1)
        expected = response_topic(request_id)
        while True:
            try:
                topic, payload = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise Unreachable(f"no answer to {command.value!r} within {timeout:g} s "
                                  "(is this broker a chatmq broker with the admin plugin?)") from None
            if topic == expected:
                break
        answer = orjson.loads(payload)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise RequestFailed(str(error.get("code", "error")), str(error.get("message", "request failed")))
        return answer.get("result")

    def __enter__(self) -> AdminChannel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def notify_auth_change(data_dir: Path | None, user: str) -> bool:
    """Ask the running broker(s) to re-check ``user``'s live connections now (after a disable).

    Best effort: with no stack running there is nothing to re-check, and the next login is
    checked anyway. True if a broker was listening."""
    import redis

    from chatcore import redisconn
    from chatcore.revocation import AUTH_CHANGED_CHANNEL

    client = redisconn.connect(resolve(data_dir).redis_url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return int(client.publish(AUTH_CHANGED_CHANNEL, user)) > 0  # type: ignore[arg-type]
    except redis.RedisError:
        return False
    finally:
        client.close()
