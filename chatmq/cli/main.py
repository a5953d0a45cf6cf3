"""The ``chatmq`` command line: run the stack and administer it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from chatmq.cli import backup, convcopy, ops, transfer
from chatmq.cli.admin import conv, history, presence, user
from chatmq.cli.chat import chat
from chatmq.cli.mongo_cmd import mongo_shard_script
from chatmq.cli.mosquitto_cmd import mosquitto_sync
from chatmq.cli.notify_cmd import push, webhook
from chatmq.cli.rabbitmq_cmd import rabbitmq_config, rabbitmq_guard
from chatmq.cli.retention_cmd import retention
from chatmq.cli.settings_opts import (
    broker_address_options,
    broker_listener_options,
    make_settings,
    redis_option,
    server_options,
    store_options,
)
from chatmq.core import logs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", envvar="CHATMQ_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", envvar="CHATMQ_LOG_FORMAT", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="one line per event, as text or JSON")
@click.option("--log-levels", envvar="CHATMQ_LOG_LEVELS", default="",
              help="per-component levels over --log-level, e.g. chatmq.broker=DEBUG,chatmq.bridge.writer=WARNING")
@click.version_option(package_name="chatmq")
def cli(log_level: str, log_format: str, log_levels: str) -> None:
    """chatmq: a chat backend for devices that speak MQTT.

    Run the whole stack with `chatmq up`, or the broker, bridge and API as separate services.
    Admin commands (user, conv, history, presence, ...) work on the same store while it runs, or with
    --server URL through a deployment's admin HTTP API.
    """
    try:
        logs.configure(log_level, log_format, log_levels)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-levels") from None


@cli.command()
@store_options
@server_options
@redis_option
def up(data_dir: Path | None, store_url: str | None, redis_url: str | None, **ports: Any) -> None:
    """Run broker, bridge, notifier (push and webhooks), retention job and API together until Ctrl-C (SIGINT),
    SIGTERM or SIGHUP.

    Uses CHATMQ_REDIS_URL when it is reachable, else starts a private redis-server in the data dir.
    One stack per data dir: a second `chatmq up` on it is refused while the first runs.
    """
    from chatmq.cli.localredis import RedisNotInstalled
    from chatmq.cli.stackinfo import DataDirBusy
    from chatmq.cli.supervisor import PortTaken, Supervisor

    settings = make_settings(data_dir=data_dir, store_url=store_url, **ports)
    try:
        code = Supervisor(settings, redis_url=redis_url).run()
    except (DataDirBusy, PortTaken, RedisNotInstalled) as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)


@cli.command()
@store_options
@broker_listener_options
@redis_option
@click.option("--allow-anonymous", is_flag=True, default=None,
              help="also act as a plain MQTT 3.1.1 broker outside the chat namespaces, anonymous clients included")
@click.option("--mqtt-tls-port", type=int, default=None, help="MQTT over TLS port (e.g. 8883) [default off]")
@click.option("--ws-tls-port", type=int, default=None, help="MQTT over secure WebSocket port [default off]")
@click.option("--tls-cert", "tls_certfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM certificate chain for the TLS listeners [env CHATMQ_TLS_CERTFILE]")
@click.option("--tls-key", "tls_keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM private key for the TLS listeners [env CHATMQ_TLS_KEYFILE]")
def broker(data_dir: Path | None, store_url: str | None, redis_url: str | None, **options: Any) -> None:
    """Run the MQTT broker (authentication, access control, routing, persistent sessions in Redis)."""
    from chatmq.broker.config import TLSConfigError
    from chatmq.broker.server import run

    try:
        run(make_settings(data_dir=data_dir, store_url=store_url, redis_url=redis_url, **options))
    except TLSConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@store_options
@redis_option
@broker_address_options
@click.option("--worker-id", "bridge_worker_id", default=None,
              help="run as one of several bridge workers under this stable id (auto: host-pid) "
                   "[env CHATMQ_BRIDGE_WORKER_ID; default: the single bridge]")
@click.option("--partitions", "bridge_partitions", type=click.IntRange(1, 4096), default=None,
              help="conversation partitions shared by the workers; the same for all [default 64]")
@click.option("--lease", "bridge_lease_s", type=click.FloatRange(0.5, 300), default=None,
              help="seconds a dead worker's partitions wait before moving [default 5]")
def bridge(**options: Any) -> None:
    """Run the bridge: sequence, store, ack and fan out messages; track presence.

    With --worker-id, several bridges share the conversations: each handles the partitions whose
    lease it holds in Redis, and a dead worker's partitions move to the others (docs/reliability.md).
    """
    from chatmq.bridge.service import run
    from chatmq.core.partitions import check_worker_id

    settings = make_settings(**options)
    if settings.bridge_worker_id not in (None, "", "auto"):  # from the option or the environment
        try:
            check_worker_id(settings.bridge_worker_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--worker-id / CHATMQ_BRIDGE_WORKER_ID") from None
    run(settings)


@cli.command()
@store_options
@redis_option
@broker_address_options
@click.option("--host", default=None, help="address to listen on [default 127.0.0.1]")
@click.option("--http-port", type=int, default=None, help="HTTP port [default 8080]")
@click.option("--workers", "api_workers", type=int, default=None, help="API worker processes (granian) [default 2]")
def api(**options: Any) -> None:
    """Run the HTTP API (tokens, history, search, conversations, media, presence, the admin API, health)
    and serve the web app at /app/."""
    from chatmq.api.server import run

    run(make_settings(**options))


@cli.command()
@store_options
@redis_option
@click.option("--push-gateway-url", default=None,
              help="POST push notifications here (docs/protocol.md, Push gateway) [env CHATMQ_PUSH_GATEWAY_URL; "
                   "default: push off]")
def notifier(**options: Any) -> None:
    """Run the notifier: offline push notifications and webhooks from the store's outbox.

    At least once, with retries and dead letters (chatmq push / chatmq webhook). One notifier is
    active at a time (a lease in Redis); another one started beside it is a standby.
    """
    from chatmq.notifier.service import run

    run(make_settings(**options))


@cli.command("push-gateway")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="TOML file with the [fcm] and/or [apns] credentials (docs/operations.md)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=8090, show_default=True, help="HTTP port")
def push_gateway(config_path: Path, host: str, port: int) -> None:
    """Run chatmq's push gateway: turns notifications into FCM HTTP v1 and APNs requests."""
    from chatmq.pushgateway.config import ConfigError, load_config
    from chatmq.pushgateway.server import serve

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    serve(config, host, port)


cli.add_command(user)
cli.add_command(retention)
cli.add_command(conv)
cli.add_command(history)
cli.add_command(presence)
cli.add_command(chat)

cli.add_command(ops.clients)
cli.add_command(ops.kick)
cli.add_command(ops.tail)
cli.add_command(ops.stats)
cli.add_command(ops.token)
cli.add_command(transfer.export)
cli.add_command(transfer.import_)
cli.add_command(convcopy.export)
cli.add_command(backup.backup)
cli.add_command(backup.verify_backup_command)
cli.add_command(backup.restore)
cli.add_command(convcopy.import_)
cli.add_command(mosquitto_sync)
cli.add_command(rabbitmq_config)
cli.add_command(rabbitmq_guard)
cli.add_command(mongo_shard_script)
cli.add_command(push)
cli.add_command(webhook)

def main() -> None:
    cli(prog_name="chatmq")


if __name__ == "__main__":
    main()
