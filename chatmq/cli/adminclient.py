"""Talking to a running stack from the operator commands: where it is, and the admin channel.

Where: ``--broker-host/--broker-port``, else CHATMQ_BROKER_HOST/CHATMQ_BROKER_PORT, else what
``chatmq up`` recorded in the data dir (chatmq.stackinfo), else the Settings defaults.
Who: the admin identity, with a short-lived admin token signed by the deployment's key (the
data dir's secret.key or CHATMQ_SECRET_KEY), exactly as the bridge's service token is minted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from chatmq.cli.settings_opts import make_settings
from chatmq.cli.stackinfo import read_stack
from chatmq.cli.supervisor import recorded_redis_url
from chatmq.clients.control import ControlClient, ControlRefused, ControlUnreachable, Session
from chatmq.core.auth import issue_token
from chatmq.core.config import ADMIN_USER, SERVICE_USER, Settings
from chatmq.core.control import Command

EXIT_ERROR = 1  # the command ran and failed: unknown id, refused request
EXIT_UNREACHABLE = 3  # the stack (broker, Redis, metrics port) is not running or not reachable
TOKEN_TTL_S = 300


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


class MqttSession(Session):
    """A paho connection as the admin or the service identity (clients.control.Session), with the
    failures said the way the operator commands say them."""

    def __init__(self, target: Target, *, service: bool = False) -> None:
        secret = target.settings.load_secret()
        user = SERVICE_USER if service else ADMIN_USER
        token = issue_token(secret, user, TOKEN_TTL_S, service=service, admin=not service).token
        with _said_for_operators(target, service):
            super().__init__(target.host, target.port, user, token,
                             client_id_prefix="chatmq-tail" if service else "chatmq-admin")

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        with _said_for_operators(None, False):
            super().subscribe(topic_filter, qos)


class AdminChannel:
    """Request/response over ``$CONTROL/chatmq/v1/...`` (clients.control.ControlClient)."""

    def __init__(self, target: Target) -> None:
        token = issue_token(target.settings.load_secret(), ADMIN_USER, TOKEN_TTL_S, admin=True).token
        with _said_for_operators(target, False):
            self._client = ControlClient(target.host, target.port, ADMIN_USER, token)

    def request(self, command: Command, args: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        with _said_for_operators(None, False):
            return self._client.request(command, args, timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AdminChannel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LocalBroker:
    """chatmq.core.admin.BrokerControl through the admin channel of the stack this machine runs."""

    def __init__(self, target: Target) -> None:
        self._target = target

    def request(self, command: str, args: dict[str, Any]) -> Any:
        from chatmq.core.admin import AdminError

        try:
            with AdminChannel(self._target) as channel:
                return channel.request(Command(command), args)
        except Unreachable as exc:
            raise AdminError("unavailable", exc.message) from None
        except RequestFailed as exc:
            raise AdminError(exc.code, exc.message) from None


@contextmanager
def _said_for_operators(target: Target | None, service: bool) -> Iterator[None]:
    try:
        yield
    except ControlUnreachable as exc:
        hint = "; is the stack running (`chatmq up`)?" if "not reachable" in str(exc) else ""
        raise Unreachable(f"{exc}{hint}") from None
    except ControlRefused as exc:
        if exc.code == "login_refused" and target is not None:
            raise click.ClickException(
                f"the broker at {target.host}:{target.port} refused the {'service' if service else 'admin'} "
                f"identity ({exc.detail}); does this data dir (or CHATMQ_SECRET_KEY) hold the stack's secret key?"
            ) from None
        if exc.code == "subscribe_refused":
            raise click.ClickException(exc.message) from None
        raise RequestFailed(exc.code, exc.message) from None


def notify_auth_change(data_dir: Path | None, user: str) -> bool:
    """Ask the running broker(s) to re-check ``user``'s live connections now (after a disable).

    Best effort: with no stack running there is nothing to re-check, and the next login is
    checked anyway. True if a broker was listening."""
    import redis

    from chatmq.core import redisconn
    from chatmq.core.revocation import AUTH_CHANGED_CHANNEL

    client = redisconn.connect(resolve(data_dir).redis_url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return int(client.publish(AUTH_CHANGED_CHANNEL, user)) > 0  # type: ignore[arg-type]
    except redis.RedisError:
        return False
    finally:
        client.close()
