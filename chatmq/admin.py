"""Admin commands. They work directly on the store, so they need no running stack; the broker and
bridge see membership changes within a second because they poll the store's membership version."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
import redis

from chatcore import redisconn
from chatcore.auth import hash_password
from chatcore.ids import ID_PATTERN, is_valid_id
from chatcore.presence import Presence
from chatcore.store import AlreadyExists, NotFound, Store, open_store
from chatmq.mosquitto_cmd import push_password_if_configured
from chatmq.settings_opts import make_settings, redis_option, store_options
from chatmq.supervisor import recorded_redis_url


@contextmanager
def _store(data_dir: Path | None, store_url: str | None) -> Iterator[Store]:
    settings = make_settings(data_dir=data_dir, store_url=store_url)
    store = open_store(settings.resolved_store_url)
    try:
        yield store
    except (NotFound, AlreadyExists) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _check_id(value: str, kind: str) -> str:
    if not is_valid_id(value):
        raise click.BadParameter(f"{value!r} is not a valid {kind} id (must match {ID_PATTERN})")
    return value


def _read_password(password: str | None, from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.BadParameter("the password must not be empty")
    return password


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "never"


password_options = [
    click.option("--password", default=None, help="the password (prefer --password-stdin: argv is visible)"),
    click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin"),
]


def _with_password(func):  # type: ignore[no-untyped-def]
    for option in reversed(password_options):
        func = option(func)
    return func


@click.group()
def user() -> None:
    """Manage users (MQTT username = user id)."""


@user.command("add")
@click.argument("name")
@_with_password
@store_options
def user_add(name: str, password: str | None, password_stdin: bool, **where: Path | str | None) -> None:
    """Create user NAME."""
    _check_id(name, "user")
    secret = _read_password(password, password_stdin)
    with _store(**where) as store:  # type: ignore[arg-type]
        store.create_user(name, hash_password(secret))
    push_password_if_configured(name, secret)  # Mosquitto as the broker: see docs/brokers.md
    click.echo(f"user {name} created")


@user.command("list")
@store_options
def user_list(**where: Path | str | None) -> None:
    """List users."""
    with _store(**where) as store:  # type: ignore[arg-type]
        for entry in store.list_users():
            state = "disabled" if entry.disabled else "active"
            click.echo(f"{entry.id}\t{state}\tcreated {_when(entry.created_at)}")


@user.command("passwd")
@click.argument("name")
@_with_password
@store_options
def user_passwd(name: str, password: str | None, password_stdin: bool, **where: Path | str | None) -> None:
    """Set user NAME's password."""
    secret = _read_password(password, password_stdin)
    with _store(**where) as store:  # type: ignore[arg-type]
        store.set_password(name, hash_password(secret))
    push_password_if_configured(name, secret)  # Mosquitto as the broker: see docs/brokers.md
    click.echo(f"password of {name} changed")


@user.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="enable the user again instead")
@store_options
def user_disable(name: str, enable: bool, **where: Path | str | None) -> None:
    """Disable user NAME: no new logins or tokens (or enable it again with --enable)."""
    with _store(**where) as store:  # type: ignore[arg-type]
        store.set_disabled(name, not enable)
    if not enable:  # its live connections are closed within a second by the running broker
        from chatmq.adminclient import notify_auth_change

        notify_auth_change(where.get("data_dir"), name)  # type: ignore[arg-type]
    click.echo(f"user {name} {'enabled' if enable else 'disabled'}")


@click.group()
def conv() -> None:
    """Manage conversations and their members."""


@conv.command("create")
@click.option("--id", "conv_id", required=True, help="conversation id")
@click.option("--members", required=True, help="comma-separated user ids")
@click.option("--title", default=None)
@store_options
def conv_create(conv_id: str, members: str, title: str | None, **where: Path | str | None) -> None:
    """Create a conversation; prints its id."""
    _check_id(conv_id, "conversation")
    names = sorted({_check_id(m.strip(), "user") for m in members.split(",") if m.strip()})
    if not names:
        raise click.BadParameter("at least one member is needed", param_hint="--members")
    with _store(**where) as store:  # type: ignore[arg-type]
        store.create_conversation(conv_id, names, title=title)
    click.echo(conv_id)


@conv.command("list")
@store_options
def conv_list(**where: Path | str | None) -> None:
    """List conversations."""
    with _store(**where) as store:  # type: ignore[arg-type]
        for entry in store.list_conversations():
            click.echo(f"{entry.id}\t{entry.title or '-'}\t{len(entry.members)} members\tlast_seq {entry.last_seq}")


@conv.command("show")
@click.argument("conv_id")
@store_options
def conv_show(conv_id: str, **where: Path | str | None) -> None:
    """Show one conversation."""
    with _store(**where) as store:  # type: ignore[arg-type]
        entry = store.get_conversation(conv_id)
        if entry is None:
            raise click.ClickException(f"unknown conversation {conv_id!r}")
    click.echo(f"id:       {entry.id}\ntitle:    {entry.title or '-'}\nmembers:  {', '.join(entry.members)}")
    click.echo(f"last_seq: {entry.last_seq}\ncreated:  {_when(entry.created_at)}")


@conv.command("add-member")
@click.argument("conv_id")
@click.argument("user_id")
@store_options
def conv_add_member(conv_id: str, user_id: str, **where: Path | str | None) -> None:
    """Add USER_ID to CONV_ID."""
    with _store(**where) as store:  # type: ignore[arg-type]
        store.add_member(conv_id, user_id)
    click.echo(f"{user_id} added to {conv_id}")


@conv.command("remove-member")
@click.argument("conv_id")
@click.argument("user_id")
@store_options
def conv_remove_member(conv_id: str, user_id: str, **where: Path | str | None) -> None:
    """Remove USER_ID from CONV_ID."""
    with _store(**where) as store:  # type: ignore[arg-type]
        store.remove_member(conv_id, user_id)
    click.echo(f"{user_id} removed from {conv_id}")


@click.command()
@click.argument("conv_id")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--before", type=click.IntRange(min=1), default=None, help="only messages with seq < BEFORE")
@click.option("--after", type=click.IntRange(min=0), default=None, help="only messages with seq > AFTER")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@store_options
def history(conv_id: str, limit: int, before: int | None, after: int | None, as_json: bool,
            **where: Path | str | None) -> None:
    """Print a conversation's messages (newest LIMIT by default), oldest first."""
    with _store(**where) as store:  # type: ignore[arg-type]
        if store.get_conversation(conv_id) is None:
            raise click.ClickException(f"unknown conversation {conv_id!r}")
        page = store.history(conv_id, before=before, after=after, limit=limit)
    for message in page.messages:
        if as_json:
            click.echo(orjson.dumps(message.to_payload()).decode())
        else:
            click.echo(f"#{message.seq} {_when(message.ts)} {message.sender}: {message.body}")


@click.command()
@click.argument("user_id")
@redis_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="find the private Redis that `chatmq up` started for this data dir")
def presence(user_id: str, redis_url: str | None, data_dir: Path | None) -> None:
    """Show whether USER_ID is online (from Redis)."""
    settings = make_settings(data_dir=data_dir)
    redis_url = redis_url or os.environ.get("CHATMQ_REDIS_URL") or recorded_redis_url(settings.data_dir)
    settings = make_settings(data_dir=data_dir, redis_url=redis_url)
    client = redisconn.connect(settings.redis_url, socket_connect_timeout=2)
    try:
        state = Presence(client, int(settings.presence_ttl_s * 1000)).get(user_id, int(time.time() * 1000))
    except redis.RedisError as exc:
        raise click.ClickException(f"redis at {settings.redis_url} is not reachable: {exc}") from None
    finally:
        client.close()
    status = "online" if state.online else "offline"
    click.echo(f"{user_id}\t{status}\tlast seen {_when(state.last_seen)}")
