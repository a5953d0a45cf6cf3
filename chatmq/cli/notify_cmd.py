"""Operator commands for the notifier: ``chatmq push ...`` and ``chatmq webhook ...``.

Like the other admin commands they work on the store directly, so they need no running stack and
a running notifier sees every change on its next pass (replayed deliveries go out within a
fraction of a second). Push and webhook deliveries share one delivery log: ``log`` shows it,
``dead`` the dead letters, ``replay`` makes deliveries pending again (same idempotency key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
import orjson

from chatmq.cli.admin import _when
from chatmq.cli.settings_opts import make_settings, store_options
from chatmq.core import webhooks
from chatmq.core.admin import AdminError, delivery_out, replay_deliveries, webhook_events
from chatmq.core.ids import is_valid_id
from chatmq.core.store import AlreadyExists, NotFound, Store, open_store
from chatmq.core.store.base import (
    DELIVERY_DEAD,
    DELIVERY_PUSH,
    DELIVERY_STATES,
    DELIVERY_WEBHOOK,
    Delivery,
    Webhook,
)


@contextmanager
def _store(data_dir: Path | None, store_url: str | None) -> Iterator[Store]:
    store = open_store(make_settings(data_dir=data_dir, store_url=store_url).resolved_store_url)
    try:
        yield store
    except (NotFound, AlreadyExists) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _show(deliveries: Sequence[Delivery], as_json: bool) -> None:
    if as_json:
        for delivery in deliveries:
            click.echo(orjson.dumps(delivery_out(delivery)).decode())
        return
    if not deliveries:
        click.echo("no deliveries")
    for d in deliveries:
        what = d.payload.get("type", "?")
        error = f"  last error: {d.last_error}" if d.last_error else ""
        click.echo(f"{d.id}  {d.state:<9} {what:<20} attempts {d.attempts}  updated {_when(d.updated_at)}{error}")


def _replay(store: Store, channel: str, ids: Sequence[str], dead: bool, target: str | None) -> None:
    if not ids and not dead:
        raise click.UsageError("name deliveries to replay, or pass --dead")
    try:
        count = replay_deliveries(store, ids, dead=dead, channel=channel, target=target)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{count} {channel} deliveries pending again; the notifier sends them on its next pass")


def _log_command(group: click.Group, channel: str, target_help: str, target_of: Callable[[str], str]) -> None:
    """``log``, ``dead`` and ``replay``, the same for push and webhooks."""

    @group.command("log")
    @click.argument("target", required=False)
    @click.option("--state", type=click.Choice(DELIVERY_STATES), default=None, help="only deliveries in this state")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="one JSON object per line, payload included")
    @store_options
    def log_(target: str | None, state: str | None, limit: int, as_json: bool, data_dir: Path | None,
             store_url: str | None) -> None:  # fmt: skip
        """The delivery log, newest first (delivered ones are kept CHATMQ_DELIVERY_LOG_DAYS)."""
        with _store(data_dir, store_url) as store:
            _show(store.list_deliveries(channel=channel, state=state,
                                        target=target_of(target) if target else None, limit=limit), as_json)

    log_.help = f"The {channel} delivery log, newest first (TARGET: {target_help})."

    @group.command("dead")
    @click.argument("target", required=False)
    @click.option("--json", "as_json", is_flag=True, help="one JSON object per line, payload included")
    @store_options
    def dead(target: str | None, as_json: bool, data_dir: Path | None, store_url: str | None) -> None:
        """Dead letters: deliveries whose retries ran out or that were refused for good."""
        with _store(data_dir, store_url) as store:
            _show(store.list_deliveries(channel=channel, state=DELIVERY_DEAD,
                                        target=target_of(target) if target else None, limit=100_000), as_json)

    @group.command("replay")
    @click.argument("delivery_ids", nargs=-1)
    @click.option("--dead", "all_dead", is_flag=True, help="every dead delivery (of --target, if given)")
    @click.option("--target", default=None, help=target_help)
    @store_options
    def replay(delivery_ids: tuple[str, ...], all_dead: bool, target: str | None, data_dir: Path | None,
               store_url: str | None) -> None:  # fmt: skip
        """Send deliveries again (dead, delivered or pending), with their original idempotency key."""
        with _store(data_dir, store_url) as store:
            _replay(store, channel, delivery_ids, all_dead, target_of(target) if target else None)


# --- chatmq push ---------------------------------------------------------------------------------


@click.group()
def push() -> None:
    """Offline push: devices' push targets, the notification log, dead letters and replay."""


@push.command("targets")
@click.argument("user")
@store_options
def push_targets(user: str, data_dir: Path | None, store_url: str | None) -> None:
    """The devices USER registered for push (POST /v1/push/targets)."""
    with _store(data_dir, store_url) as store:
        targets = store.push_targets([user])
    if not targets:
        click.echo(f"{user} has no push targets")
    for target in targets:
        token = target.token if len(target.token) <= 16 else f"{target.token[:8]}…{target.token[-6:]}"
        click.echo(f"{target.device}  {target.platform}  {token}  app={target.app_id or '-'}  "
                   f"preview={'on' if target.preview else 'off'}  registered {_when(target.updated_at)}")


_log_command(push, DELIVERY_PUSH, "USER/DEVICE", lambda target: target)


# --- chatmq webhook ------------------------------------------------------------------------------


@click.group()
def webhook() -> None:
    """Webhook subscriptions: add, list, remove; their delivery log, dead letters and replay."""


def _events(value: str) -> tuple[str, ...]:
    try:
        return webhook_events(value.split(","))
    except AdminError as exc:
        raise click.BadParameter(str(exc)) from None


@webhook.command("add")
@click.argument("webhook_id")
@click.argument("url")
@click.option("--events", default=",".join(webhooks.EVENT_TYPES), show_default=True,
              help="comma-separated event types")
@click.option("--secret", default=None, help="the signing secret [default: a new random one, printed]")
@store_options
def webhook_add(webhook_id: str, url: str, events: str, secret: str | None, data_dir: Path | None,
                store_url: str | None) -> None:  # fmt: skip
    """Subscribe URL to events; each delivery is signed with the secret (docs/protocol.md, Webhooks)."""
    if not is_valid_id(webhook_id):
        raise click.BadParameter(f"{webhook_id!r} is not a valid id", param_hint="WEBHOOK_ID")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="URL")
    chosen = _events(events)
    with _store(data_dir, store_url) as store:
        hook = store.add_webhook(Webhook(webhook_id, url, secret or webhooks.new_secret(), chosen))
    click.echo(f"webhook {hook.id} -> {hook.url} for {', '.join(hook.events)}")
    click.echo(f"secret: {hook.secret}")


@webhook.command("list")
@click.option("--show-secrets", is_flag=True, help="print the signing secrets too")
@store_options
def webhook_list(show_secrets: bool, data_dir: Path | None, store_url: str | None) -> None:
    """Every subscription."""
    with _store(data_dir, store_url) as store:
        hooks = store.webhooks()
    if not hooks:
        click.echo("no webhooks")
    for hook in hooks:
        secret = f"  secret {hook.secret}" if show_secrets else ""
        click.echo(f"{hook.id}  {hook.url}  {','.join(hook.events)}  since {_when(hook.created_at)}{secret}")


@webhook.command("remove")
@click.argument("webhook_id")
@store_options
def webhook_remove(webhook_id: str, data_dir: Path | None, store_url: str | None) -> None:
    """Unsubscribe; its pending deliveries are cancelled when their turn comes."""
    with _store(data_dir, store_url) as store:
        if not store.remove_webhook(webhook_id):
            raise click.ClickException(f"no webhook {webhook_id!r}")
    click.echo(f"webhook {webhook_id} removed")


_log_command(webhook, DELIVERY_WEBHOOK, "the webhook id", lambda target: target)
