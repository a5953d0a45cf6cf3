"""Click options shared by every command, turned into one chatmq.core Settings object."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from chatmq.core.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def store_options(func: F) -> F:
    """--data-dir / --store-url: where the state lives (admin commands and every service)."""
    func = click.option(
        "--store-url", default=None, help="sqlite:///PATH or mongodb://HOST/DB [env CHATMQ_STORE_URL]"
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="embedded state: SQLite file, secret key, private Redis [env CHATMQ_DATA_DIR; default ./data]",
    )(func)
    return func


def redis_option(func: F) -> F:
    return click.option("--redis-url", default=None, help="redis://HOST:PORT/DB [env CHATMQ_REDIS_URL]")(func)


def broker_listener_options(func: F) -> F:
    """The broker's listening addresses; unset options fall back to the environment, then to the defaults."""
    func = click.option("--ws-port", type=int, default=None, help="MQTT over WebSocket port [default 8083]")(func)
    func = click.option("--mqtt-port", type=int, default=None, help="MQTT (TCP) port [default 1883]")(func)
    func = click.option("--host", default=None, help="address to listen on [default 127.0.0.1]")(func)
    return func


def server_options(func: F) -> F:
    """The whole stack's listening addresses: the broker's and the HTTP API's."""
    func = click.option("--http-port", type=int, default=None, help="HTTP API port [default 8080]")(func)
    return broker_listener_options(func)


def broker_address_options(func: F) -> F:
    """For the bridge and the API: where the (any standard) MQTT broker is."""
    func = click.option("--broker-port", type=int, default=None,
                        help="broker port [env CHATMQ_BROKER_PORT; default: CHATMQ_MQTT_PORT, else 1883]")(func)
    func = click.option("--broker-host", default=None,
                        help="broker host [env CHATMQ_BROKER_HOST; default 127.0.0.1]")(func)
    return func


def make_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options the user actually gave taking precedence."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
