"""``chatmq mosquitto-sync``: run Mosquitto (dynamic security) as chatmq's broker."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from chatmq.cli.settings_opts import make_settings, store_options

log = logging.getLogger(__name__)


@click.command("mosquitto-sync")
@store_options
@click.option("--mosquitto-url", default=None,
              help="mqtt://ADMIN:PASSWORD@HOST:PORT of Mosquitto's dynamic-security admin [env CHATMQ_MOSQUITTO_URL]")
@click.option("--service-password", default=None,
              help="the bridge's Mosquitto password; give the bridge the same [env CHATMQ_SERVICE_PASSWORD]")
@click.option("--interval", type=float, default=None, help="seconds between store polls [default 0.5]")
@click.option("--once", is_flag=True, help="one full sync, then exit")
def mosquitto_sync(data_dir: Path | None, store_url: str | None, mosquitto_url: str | None,
                   service_password: str | None, interval: float | None, once: bool) -> None:
    """Keep Mosquitto's clients, roles and ACLs in step with chatmq's users and conversations.

    Full sync at start, then only changes. Device passwords reach Mosquitto through
    `chatmq user add/passwd` (with CHATMQ_MOSQUITTO_URL set); see docs/brokers.md.
    """
    from chatmq.adapters.mosquitto.control import DynsecClient, DynsecError
    from chatmq.adapters.mosquitto.sync import MosquittoSync
    from chatmq.core.store import open_store

    settings = make_settings(data_dir=data_dir, store_url=store_url, mosquitto_url=mosquitto_url,
                             service_password=service_password)
    if not settings.mosquitto_url:
        raise click.UsageError("--mosquitto-url (or CHATMQ_MOSQUITTO_URL) is required")
    if not settings.service_password:
        raise click.UsageError("--service-password (or CHATMQ_SERVICE_PASSWORD) is required: the bridge uses it")
    store = open_store(settings.resolved_store_url)
    try:
        client = DynsecClient(settings.mosquitto_url)
        client.connect()
    except (ValueError, ConnectionError, OSError) as exc:
        store.close()
        raise click.ClickException(str(exc)) from None
    sync = MosquittoSync(store, client, settings.service_password, interval or settings.membership_refresh_s)
    try:
        count = sync.full_sync()
        click.echo(f"mosquitto in step: {count} changes sent", err=True)
        if not once:
            stop = threading.Event()
            _on_signals(stop)
            sync.run(stop)
    except DynsecError as exc:
        raise click.ClickException(f"Mosquitto refused: {exc}") from None
    finally:
        client.close()
        store.close()


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        log.info("mosquitto sync stopping (%s)", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def push_password_if_configured(user: str, password: str) -> None:
    """Called by ``chatmq user add/passwd`` right after the store took the password: the only
    moment the plain text exists, so the only moment Mosquitto can be given it."""
    settings = make_settings()
    if not settings.mosquitto_url:
        return
    from chatmq.adapters.mosquitto.control import DynsecError
    from chatmq.adapters.mosquitto.passwords import push_password

    try:
        push_password(settings.mosquitto_url, user, password)
    except (DynsecError, ConnectionError, OSError, ValueError) as exc:
        raise click.ClickException(
            f"the password of {user} is stored in chatmq, but Mosquitto did not take it ({exc}); "
            f"run `chatmq user passwd {user}` again once Mosquitto is reachable"
        ) from None
