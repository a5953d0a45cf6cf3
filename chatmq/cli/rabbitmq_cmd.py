"""``chatmq rabbitmq-config`` and ``chatmq rabbitmq-guard``: run RabbitMQ as chatmq's broker."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import click

from chatmq.cli.settings_opts import make_settings, redis_option, store_options

log = logging.getLogger(__name__)


@click.command("rabbitmq-config")
@click.option("--api-url", required=True, help="where RabbitMQ reaches chatmq's API, e.g. http://api:8080")
@click.option("--mqtt-listener", default="1883", show_default=True, help="MQTT listener: a port or IP:PORT")
@click.option("--web-mqtt-port", type=int, default=15675, show_default=True, help="MQTT over WebSocket (path /ws)")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write it to this file (replaced whole, never half-written) instead of printing it")
def rabbitmq_config(api_url: str, mqtt_listener: str, web_mqtt_port: int, output: Path | None) -> None:
    """Print chatmq's part of rabbitmq.conf: the HTTP auth backend pointed at the API (with
    CHATMQ_RABBITMQ_HOOK_SECRET), the MQTT plugin's settings and listeners (docs/brokers.md).

    Enable the plugins too: rabbitmq-plugins enable rabbitmq_mqtt rabbitmq_web_mqtt
    rabbitmq_auth_backend_http rabbitmq_management
    """
    from chatmq.adapters.rabbitmq.config import Listeners, node_config

    try:
        text = node_config(make_settings(), api_url, Listeners(mqtt_listener, web_mqtt_port))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
        return
    # A node starting beside this job must never read half a file: write beside it, then rename.
    # Readable by all (0644): the RabbitMQ nodes read it as their own user; it holds the hook secret,
    # so keep it on a volume only the nodes mount.
    partial = output.with_name(output.name + ".partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(output)
    click.echo(f"wrote {output}", err=True)


@click.command("rabbitmq-guard")
@store_options
@redis_option
@click.option(
    "--management-url",
    default=None,
    help="http://USER:PASSWORD@HOST:15672 of RabbitMQ's management API [env CHATMQ_RABBITMQ_MANAGEMENT_URL]",
)
@click.option("--once", is_flag=True, help="one pass over every session binding, then exit")
def rabbitmq_guard(data_dir: Path | None, store_url: str | None, redis_url: str | None,
                   management_url: str | None, once: bool) -> None:  # fmt: skip
    """Keep what RabbitMQ granted within chatmq's rules: unbind the subscriptions a membership
    change denies (before the API answers the change), close the connections of a user whose
    token was revoked or who was disabled. Run one per deployment, beside the API."""
    from chatmq.adapters.rabbitmq.sessions import guard_from_settings, run
    from chatmq.core import redisconn
    from chatmq.core.store import open_store

    settings = make_settings(data_dir=data_dir, store_url=store_url, redis_url=redis_url,
                             rabbitmq_management_url=management_url)  # fmt: skip
    if not settings.rabbitmq_management_url:
        raise click.UsageError("--management-url (or CHATMQ_RABBITMQ_MANAGEMENT_URL) is required")
    store = open_store(settings.resolved_store_url)
    redis_client = redisconn.connect(settings.redis_url)
    try:
        guard = guard_from_settings(settings, store, redis_client)
        if once:
            version, removed = guard.check()
            click.echo(f"rabbitmq in step with membership version {version}: {removed} binding(s) removed", err=True)
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: stop.set())
        name = guard_name()
        log.info("rabbitmq guard %s following membership and credential changes", name)
        run(guard, redis_client, name, stop, refresh_s=settings.membership_refresh_s, on_pass=_log_pass)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        redis_client.close()
        store.close()


def guard_name() -> str:
    """The name the guard reports its enforced version under (the compose healthcheck looks for it)."""
    return f"rabbitmq-guard-{os.uname().nodename}-{os.getpid()}"


def _log_pass(version: int, removed: int) -> None:
    if removed:
        log.info("membership version %d enforced: %d binding(s) removed", version, removed)
