"""Admin commands: users, conversations, bulk import, history, presence.

Local mode works directly on the store (no running stack needed; the broker and bridge see
membership changes within a second because they poll the store's membership version). With
``--server URL`` and an admin token they act through that server's admin HTTP API instead, for
deployments the operator reaches only over HTTP (chatmq/cli/remote.py). Both run chatmq.core.admin.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
import orjson
import redis

from chatmq.cli.adminclient import Unreachable
from chatmq.cli.output import columns
from chatmq.cli.remote import RemoteAdmin, admin_session, remote_options
from chatmq.cli.settings_opts import redis_option, store_options
from chatmq.core.admin import KEEP, MAX_IMPORT_ROWS, Admin
from chatmq.core.ids import ID_PATTERN, is_valid_id
from chatmq.core.provisioning import (
    FORMATS,
    Report,
    RowError,
    conversation_payload,
    guess_format,
    hash_passwords,
    parse_conversation,
    parse_user,
    read_rows,
    user_payload,
)


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


def where_options(func):  # type: ignore[no-untyped-def]
    """Local (--data-dir / --store-url) or remote (--server / --token)."""
    return remote_options(store_options(func))


@click.group()
def user() -> None:
    """Manage users (MQTT username = user id). Add --server URL to act through a server's admin API."""


@user.command("add")
@click.argument("name")
@_with_password
@click.option("--no-password", is_flag=True, help="a user who logs in with identity provider tokens only")
@click.option("--display-name", default=None, help="what chat clients show instead of the id")
@where_options
def user_add(name: str, password: str | None, password_stdin: bool, no_password: bool, display_name: str | None,
             server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Create user NAME."""
    _check_id(name, "user")
    secret = None if no_password else _read_password(password, password_stdin)
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.create_user(name, password=secret, display_name=display_name)
    click.echo(f"user {name} created")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--page-size", type=click.IntRange(1, 1000), default=1000, show_default=True)
@where_options
def user_list(as_json: bool, page_size: int, server: str | None, admin_token: str | None,
              **where: Path | str | None) -> None:
    """List users: id, state, created, display name."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        for entry in _every(lambda after: admin.list_users(after, page_size), "users"):
            if as_json:
                click.echo(orjson.dumps(entry).decode())
                continue
            state = "disabled" if entry["disabled"] else "active"
            click.echo(f"{entry['id']}\t{state}\tcreated {_when(entry['created_at'])}"
                       f"\t{entry['display_name'] or '-'}")


def _every(page: Callable[[str | None], dict[str, Any]], key: str) -> Iterator[dict[str, Any]]:
    """Every entry of a paged listing (``{key: [...], "next": cursor}``), page after page."""
    after = None
    while True:
        answer = page(after)
        yield from answer[key]
        after = answer["next"]
        if after is None:
            return


@user.command("show")
@click.argument("name")
@where_options
def user_show(name: str, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Show one user."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        entry = admin.get_user(name)
    password = "yes" if entry["has_password"] else "no (identity provider tokens only)"
    click.echo(f"id:           {entry['id']}\ndisplay name: {entry['display_name'] or '-'}\n"
               f"avatar:       {entry['avatar'] or '-'}\n"
               f"state:        {'disabled' if entry['disabled'] else 'active'}\n"
               f"password:     {password}\ncreated:      {_when(entry['created_at'])}")


@user.command("passwd")
@click.argument("name")
@_with_password
@where_options
def user_passwd(name: str, password: str | None, password_stdin: bool, server: str | None,
                admin_token: str | None, **where: Path | str | None) -> None:
    """Set user NAME's password."""
    secret = _read_password(password, password_stdin)
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.update_user(name, password=secret)
    click.echo(f"password of {name} changed")


@user.command("profile")
@click.argument("name")
@click.option("--display-name", default=None, help="the name chat clients show ('' clears it)")
@click.option("--avatar", default=None, help="media id of the user's picture ('' clears it)")
@where_options
def user_profile(name: str, display_name: str | None, avatar: str | None, server: str | None,
                 admin_token: str | None, **where: Path | str | None) -> None:
    """Set user NAME's display name or avatar."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        entry = admin.update_user(name, display_name=KEEP if display_name is None else (display_name or None),
                                  avatar=KEEP if avatar is None else (avatar or None))
    click.echo(f"profile of {name}: {entry['display_name'] or '-'} (avatar {entry['avatar'] or '-'})")


@user.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="enable the user again instead")
@where_options
def user_disable(name: str, enable: bool, server: str | None, admin_token: str | None,
                 **where: Path | str | None) -> None:
    """Disable user NAME: no new logins or tokens, live connections closed (or --enable it again)."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.update_user(name, disabled=not enable)
    click.echo(f"user {name} {'enabled' if enable else 'disabled'}")


@user.command("delete")
@click.argument("name")
@where_options
def user_delete(name: str, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Delete and erase user NAME: disabled, every token revoked, live connections closed; their
    messages become tombstones, their reactions, media, markers, push targets, mutes, presence and
    memberships are erased (docs/data-lifecycle.md says exactly what stays). Run again, it finishes
    an erasure that was interrupted."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        result = admin.delete_user(name)
    erased = (f", {result.get('messages_erased', 0)} messages and {result.get('reactions_erased', 0)} reactions erased,"
              f" left {len(result.get('conversations_left', []))} conversations") if result["erased"] else ""
    click.echo(f"user {name} deleted (disabled, tokens revoked{erased})")


@user.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="default: from the file name")
@click.option("--batch", type=click.IntRange(1, MAX_IMPORT_ROWS), default=500, show_default=True,
              help="users per store transaction (or API request)")
@click.option("--hash-workers", type=click.IntRange(1, 64), default=os.cpu_count() or 1, show_default=True,
              help="threads hashing plain passwords")
@click.option("--report", type=click.File("w"), default=None, help="also write the per-row errors here (JSONL)")
@where_options
def user_import(file: TextIO, fmt: str | None, batch: int, hash_workers: int, report: TextIO | None,
                server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Create users from FILE (CSV with a header, or JSON Lines): id, password or password_hash
    (argon2), display_name, avatar. Existing users are left as they are: re-running imports
    nothing new. Bad rows are reported by line; the exit code is 1 if any row failed."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        run_import(admin, file, fmt, batch, report, kind="users", hash_workers=hash_workers)


@click.group()
def conv() -> None:
    """Manage conversations and their members. Add --server URL to act through a server's admin API."""


@conv.command("create")
@click.option("--id", "conv_id", required=True, help="conversation id")
@click.option("--members", required=True, help="comma-separated user ids")
@click.option("--title", default=None)
@where_options
def conv_create(conv_id: str, members: str, title: str | None, server: str | None, admin_token: str | None,
                **where: Path | str | None) -> None:
    """Create a conversation; prints its id."""
    _check_id(conv_id, "conversation")
    names = sorted({_check_id(m.strip(), "user") for m in members.split(",") if m.strip()})
    if not names:
        raise click.BadParameter("at least one member is needed", param_hint="--members")
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.create_conversation(conv_id, names, title)
    click.echo(conv_id)


@conv.command("list")
@click.option("--member", default=None, help="only this user's conversations")
@where_options
def conv_list(member: str | None, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """List conversations."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        for entry in _every(lambda after: admin.list_conversations(after, 1000, member), "conversations"):
            click.echo(f"{entry['id']}\t{entry['title'] or '-'}\t{len(entry['members'])} members"
                       f"\tlast_seq {entry['last_seq']}")


@conv.command("show")
@click.argument("conv_id")
@where_options
def conv_show(conv_id: str, server: str | None, admin_token: str | None, **where: Path | str | None) -> None:
    """Show one conversation."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        entry = admin.get_conversation(conv_id)
    click.echo(f"id:       {entry['id']}\ntitle:    {entry['title'] or '-'}\nmembers:  {', '.join(entry['members'])}")
    click.echo(f"last_seq: {entry['last_seq']}\ncreated:  {_when(entry['created_at'])}")
    days = entry.get("retention_days")
    click.echo(f"retained: from seq {entry.get('first_seq', 1)}, "
               f"{'the default policy' if days is None else 'forever' if days == 0 else f'{days} days'}")


@conv.command("add-member")
@click.argument("conv_id")
@click.argument("user_id")
@where_options
def conv_add_member(conv_id: str, user_id: str, server: str | None, admin_token: str | None,
                    **where: Path | str | None) -> None:
    """Add USER_ID to CONV_ID."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.add_member(conv_id, user_id)
    click.echo(f"{user_id} added to {conv_id}")


@conv.command("remove-member")
@click.argument("conv_id")
@click.argument("user_id")
@where_options
def conv_remove_member(conv_id: str, user_id: str, server: str | None, admin_token: str | None,
                       **where: Path | str | None) -> None:
    """Remove USER_ID from CONV_ID."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.remove_member(conv_id, user_id)
    click.echo(f"{user_id} removed from {conv_id}")


@conv.command("delete")
@click.argument("conv_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@where_options
def conv_delete(conv_id: str, yes: bool, server: str | None, admin_token: str | None,
                **where: Path | str | None) -> None:
    """Delete CONV_ID with its whole history, media, receipts and delivery log (members are told)."""
    if not yes:
        click.confirm(f"delete {conv_id} and its whole history?", abort=True)
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        result = admin.delete_conversation(conv_id)
    click.echo(f"conversation {conv_id} deleted ({result['media']} uploads erased)")


@conv.command("redact")
@click.argument("conv_id")
@click.argument("seq", type=click.IntRange(1))
@where_options
def conv_redact(conv_id: str, seq: int, server: str | None, admin_token: str | None,
                **where: Path | str | None) -> None:
    """Erase message SEQ of CONV_ID as the operator: a tombstone, as a deletion by @admin."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        admin.redact_message(conv_id, seq)
    click.echo(f"message {seq} of {conv_id} redacted")


@conv.command("retention")
@click.argument("conv_id")
@click.argument("days")
@where_options
def conv_retention(conv_id: str, days: str, server: str | None, admin_token: str | None,
                   **where: Path | str | None) -> None:
    """Keep CONV_ID's history DAYS days (0: forever; 'default': the deployment's
    CHATMQ_RETENTION_DAYS). `chatmq retention` purges what is older."""
    if days != "default" and not days.isdigit():
        raise click.BadParameter("a number of days, 0 for forever, or 'default'", param_hint="DAYS")
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        entry = admin.set_retention(conv_id, None if days == "default" else int(days))
    kept = entry["retention_days"]
    policy = "the default" if kept is None else "forever" if kept == 0 else f"{kept} days"
    click.echo(f"{conv_id}: history kept {policy} (retained from seq {entry['first_seq']})")


@conv.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="default: from the file name")
@click.option("--batch", type=click.IntRange(1, MAX_IMPORT_ROWS), default=200, show_default=True)
@click.option("--report", type=click.File("w"), default=None, help="also write the per-row errors here (JSONL)")
@where_options
def conv_import(file: TextIO, fmt: str | None, batch: int, report: TextIO | None, server: str | None,
                admin_token: str | None, **where: Path | str | None) -> None:
    """Create conversations from FILE (CSV: id,title,members with the members separated by spaces;
    or JSON Lines with a members list); an existing one gains the members it lacks. Re-running
    changes nothing; bad rows are reported by line (exit code 1)."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        run_import(admin, file, fmt, batch, report, kind="conversations")


def run_import(admin: Admin | RemoteAdmin, file: TextIO, fmt: str | None, batch: int, report_to: TextIO | None,
               *, kind: str, hash_workers: int = 1) -> None:
    """Check every row here, hash plain passwords here, send the good rows in batches (progress
    bar on stderr), then say what happened and list the bad rows by line."""
    try:
        fmt = fmt or guess_format(file.name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report = Report()
    parse = parse_user if kind == "users" else parse_conversation
    good: list[tuple[int, Any]] = []
    for row in read_rows(file, fmt, report.errors):
        try:
            good.append((row.line, parse(row.data)))
        except RowError as exc:
            report.errors.append((row.line, str(exc)))
    lines = [line for line, _ in good]
    if kind == "users":
        rows = [row for _, row in good]
        plain = sum(1 for row in rows if row.password is not None)
        if plain:
            with click.progressbar(length=plain, label=f"hashing {plain} passwords", file=sys.stderr) as bar:
                users = hash_passwords(rows, hash_workers, bar.update)
        else:
            users = [row.user for row in rows]
        payloads = [user_payload(u) for u in users]
        send = admin.import_users
    else:
        payloads = [conversation_payload(row) for _, row in good]
        send = admin.import_conversations
    with click.progressbar(length=len(payloads), label=f"importing {len(payloads)} {kind}", file=sys.stderr) as bar:
        for start in range(0, len(payloads), batch):
            answer = send(payloads[start : start + batch])
            report.created += answer["created"]
            report.existing += answer["existing"]
            report.updated += answer["updated"]
            report.errors += [(lines[start + error["index"]], error["error"]) for error in answer["errors"]]
            bar.update(min(batch, len(payloads) - start))
    report.errors.sort()
    for line, why in report.errors:
        click.echo(f"line {line}: {why}", err=True)
        if report_to is not None:
            report_to.write(orjson.dumps({"line": line, "error": why}).decode() + "\n")
    updated = f", {report.updated} given missing members" if kind == "conversations" else ""
    click.echo(f"{kind}: {report.created} created, {report.existing} already there{updated}, "
               f"{len(report.errors)} bad row(s)")
    if report.errors:
        raise SystemExit(1)


@click.command()
@click.argument("conv_id")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--before", type=click.IntRange(min=1), default=None, help="only messages with seq < BEFORE")
@click.option("--after", type=click.IntRange(min=0), default=None, help="only messages with seq > AFTER")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@where_options
def history(conv_id: str, limit: int, before: int | None, after: int | None, as_json: bool, server: str | None,
            admin_token: str | None, **where: Path | str | None) -> None:
    """Print a conversation's messages (newest LIMIT by default), oldest first."""
    with admin_session(server, admin_token, **where) as admin:  # type: ignore[arg-type]
        page = admin.history(conv_id, before=before, after=after, limit=limit)
    for message in page["messages"]:
        if as_json:
            click.echo(orjson.dumps(message).decode())
        else:
            click.echo(f"#{message['seq']} {_when(message['ts'])} {message['sender']}: {message['body']}")


@click.command()
@click.argument("user_ids", metavar="USER...", nargs=-1, required=True)
@redis_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the stack's data dir: its store, and the Redis `chatmq up` uses")
@remote_options
def presence(user_ids: tuple[str, ...], redis_url: str | None, data_dir: Path | None, server: str | None,
             admin_token: str | None) -> None:
    """Show whether each USER is online, and when it was last seen."""
    try:
        with admin_session(server, admin_token, data_dir, redis_url=redis_url) as admin:
            states = [admin.presence(user) for user in user_ids]
    except redis.RedisError as exc:
        raise Unreachable(f"Redis is not reachable: {exc}") from None
    rows = [(state["user"], state["status"], _when(state["last_seen"])) for state in states]
    for line in columns(("USER", "STATUS", "LAST_SEEN"), rows):
        click.echo(line)
