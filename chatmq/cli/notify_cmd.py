"""Operator commands for the notifier: ``chatmq push ...`` and ``chatmq webhook ...``.

Like the other admin commands they act on the store here (local mode: no running stack needed) or,
with ``--server URL`` and an admin token, through a server's admin API (``/v1/admin/webhooks``,
``/v1/admin/deliveries``, ``/v1/admin/users/{user}/push-targets``); both run
chatmq.core.admin.Admin's operations and print the same. A running notifier sees every change on its
next pass (replayed deliveries go out within a fraction of a second). Push and webhook deliveries
share one delivery log: ``log`` shows it, ``dead`` the dead letters, ``replay`` makes deliveries
pending again (same idempotency key).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from chatmq.cli.admin import _when, where_options
from chatmq.cli.remote import admin_session
from chatmq.core import webhooks
from chatmq.core.admin import MAX_PAGE, AdminError, webhook_events
from chatmq.core.ids import is_valid_id
from chatmq.core.store.base import DELIVERY_DEAD, DELIVERY_PUSH, DELIVERY_STATES, DELIVERY_WEBHOOK


def _show(deliveries: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for delivery in deliveries:
            click.echo(orjson.dumps(delivery).decode())
        return
    if not deliveries:
        click.echo("no deliveries")
    for d in deliveries:
        what = d["payload"].get("type", "?")
        error = f"  last error: {d['last_error']}" if d["last_error"] else ""
        click.echo(f"{d['id']}  {d['state']:<9} {what:<20} attempts {d['attempts']}  "
                   f"updated {_when(d['updated_at'])}{error}")


def _log_command(group: click.Group, channel: str, target_help: str) -> None:
    """``log``, ``dead`` and ``replay``, the same for push and webhooks."""

    @group.command("log")
    @click.argument("target", required=False)
    @click.option("--state", type=click.Choice(DELIVERY_STATES), default=None, help="only deliveries in this state")
    @click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="one JSON object per line, payload included")
    @where_options
    def log_(target: str | None, state: str | None, limit: int, as_json: bool, server: str | None,
             admin_token: str | None, **where: Path | str | None) -> None:  # fmt: skip
        """The delivery log, newest first (delivered ones are kept CHATMQ_DELIVERY_LOG_DAYS)."""
        with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
            _show(admin.deliveries(channel, state, target, limit)["deliveries"], as_json)

    log_.help = f"The {channel} delivery log, newest first (TARGET: {target_help})."

    @group.command("dead")
    @click.argument("target", required=False)
    @click.option("--json", "as_json", is_flag=True, help="one JSON object per line, payload included")
    @where_options
    def dead(target: str | None, as_json: bool, server: str | None, admin_token: str | None,
             **where: Path | str | None) -> None:  # fmt: skip
        """Dead letters (the newest 1,000): deliveries whose retries ran out or that were refused for good."""
        with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
            _show(admin.deliveries(channel, DELIVERY_DEAD, target, MAX_PAGE)["deliveries"], as_json)

    @group.command("replay")
    @click.argument("delivery_ids", nargs=-1)
    @click.option("--dead", "all_dead", is_flag=True, help="every dead delivery (of --target, if given)")
    @click.option("--target", default=None, help=target_help)
    @where_options
    def replay(delivery_ids: tuple[str, ...], all_dead: bool, target: str | None, server: str | None,
               admin_token: str | None, **where: Path | str | None) -> None:  # fmt: skip
        """Send deliveries again (dead, delivered or pending), with their original idempotency key."""
        if not delivery_ids and not all_dead:
            raise click.UsageError("name deliveries to replay, or pass --dead")
        with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
            count = admin.replay_deliveries(list(delivery_ids), dead=all_dead, channel=channel,
                                            target=target)["replayed"]  # fmt: skip
        click.echo(f"{count} {channel} deliveries pending again; the notifier sends them on its next pass")


# --- chatmq push ---------------------------------------------------------------------------------


@click.group()
def push() -> None:
    """Offline push: devices' push targets, the notification log, dead letters and replay."""


@push.command("targets")
@click.argument("user")
@where_options
def push_targets(user: str, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """The devices USER registered for push (POST /v1/push/targets)."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        targets = admin.push_targets(user)["targets"]
    if not targets:
        click.echo(f"{user} has no push targets")
    for target in targets:
        token = target["token"] if len(target["token"]) <= 16 else f"{target['token'][:8]}…{target['token'][-6:]}"
        click.echo(f"{target['device']}  {target['platform']}  {token}  app={target['app_id'] or '-'}  "
                   f"preview={'on' if target['preview'] else 'off'}  registered {_when(target['updated_at'])}")


_log_command(push, DELIVERY_PUSH, "USER/DEVICE")


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
@where_options
def webhook_add(webhook_id: str, url: str, events: str, secret: str | None, server: str | None,
                admin_token: str | None, **where: Path | str | None) -> None:  # fmt: skip
    """Subscribe URL to events; each delivery is signed with the secret (docs/protocol.md, Webhooks)."""
    if not is_valid_id(webhook_id):
        raise click.BadParameter(f"{webhook_id!r} is not a valid id", param_hint="WEBHOOK_ID")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="URL")
    chosen = list(_events(events))
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        hook = admin.add_webhook(webhook_id, url, chosen, secret)
    click.echo(f"webhook {hook['id']} -> {hook['url']} for {', '.join(hook['events'])}")
    click.echo(f"secret: {hook['secret']}")


@webhook.command("list")
@click.option("--show-secrets", is_flag=True, help="print the signing secrets too (local mode only: the admin "
              "API shows a secret only in the answer to its creation)")
@where_options
def webhook_list(show_secrets: bool, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Every subscription."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        hooks = admin.list_webhooks(secrets=show_secrets)["webhooks"]
    if not hooks:
        click.echo("no webhooks")
    for hook in hooks:
        secret = f"  secret {hook['secret']}" if show_secrets else ""
        events = ",".join(hook["events"])
        click.echo(f"{hook['id']}  {hook['url']}  {events}  since {_when(hook['created_at'])}{secret}")


@webhook.command("remove")
@click.argument("webhook_id")
@where_options
def webhook_remove(webhook_id: str, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Unsubscribe; its pending deliveries are cancelled when their turn comes."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.remove_webhook(webhook_id)
    click.echo(f"webhook {webhook_id} removed")


_log_command(webhook, DELIVERY_WEBHOOK, "the webhook id")
