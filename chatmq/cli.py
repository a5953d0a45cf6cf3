"""The ``chatmq`` command line: run the stack and administer it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from chatcore import logs
from chatmq.admin import conv, history, presence, user
from chatmq.chat import chat
from chatmq.settings_opts import (
    broker_address_options,
    make_settings,
    redis_option,
    server_options,
    store_options,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", envvar="CHATMQ_LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", envvar="CHATMQ_LOG_FORMAT", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="one line per event, as text or JSON")
@click.version_option(package_name="chatmq")
def cli(log_level: str, log_format: str) -> None:
    """chatmq: a chat backend for devices that speak MQTT.

    Run the whole stack with `chatmq up`, or the broker, bridge and API as separate services.
    Admin commands (user, conv, history, presence) work on the same store while it runs.
    """
    logs.configure(log_level, log_format)


@cli.command()
@store_options
@server_options
@redis_option
def up(data_dir: Path | None, store_url: str | None, redis_url: str | None, **ports: Any) -> None:
    """Run broker, bridge and API together until SIGINT or SIGTERM.

    Uses CHATMQ_REDIS_URL when it is reachable, else starts a private redis-server in the data dir.
    """
    from chatmq.localredis import RedisNotInstalled
    from chatmq.supervisor import PortTaken, Supervisor

    settings = make_settings(data_dir=data_dir, store_url=store_url, **ports)
    try:
        code = Supervisor(settings, redis_url=redis_url).run()
    except (PortTaken, RedisNotInstalled) as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)


@cli.command()
@store_options
@server_options
@redis_option
@click.option("--allow-anonymous", is_flag=True, default=None,
              help="also act as a plain MQTT 3.1.1 broker outside the chat namespaces, anonymous clients included")
def broker(data_dir: Path | None, store_url: str | None, redis_url: str | None, allow_anonymous: bool | None,
           **ports: Any) -> None:
    """Run the MQTT broker (authentication, access control, routing, persistent sessions in Redis)."""
    from broker.server import run

    run(make_settings(data_dir=data_dir, store_url=store_url, redis_url=redis_url, allow_anonymous=allow_anonymous,
                      **ports))


@cli.command()
@store_options
@redis_option
@broker_address_options
def bridge(**options: Any) -> None:
    """Run the bridge: sequence, store, ack and fan out messages; track presence."""
    from bridge.service import run

    run(make_settings(**options))


@cli.command()
@store_options
@redis_option
@broker_address_options
@click.option("--host", default=None, help="address to listen on [default 127.0.0.1]")
@click.option("--http-port", type=int, default=None, help="HTTP port [default 8080]")
@click.option("--workers", "api_workers", type=int, default=None, help="WSGI worker processes [default 2]")
def api(**options: Any) -> None:
    """Run the HTTP API (history, tokens, conversations, presence, health)."""
    from api.server import run

    run(make_settings(**options))


cli.add_command(user)
cli.add_command(conv)
cli.add_command(history)
cli.add_command(presence)
cli.add_command(chat)


def main() -> None:
    cli(prog_name="chatmq")


if __name__ == "__main__":
    main()
