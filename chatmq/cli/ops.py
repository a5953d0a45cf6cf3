"""Operator commands against a running stack: clients, kick, tail, stats, tokens.

They reach the broker's admin channel as the admin identity (chatmq.adminclient). Exit codes:
0 done, 1 failed (unknown id, refused), 2 bad usage, 3 the stack is not reachable.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
import redis

from chatmq.cli.adminclient import AdminChannel, MqttSession, RequestFailed, Target, Unreachable, resolve
from chatmq.cli.output import columns
from chatmq.cli.remote import admin_session, remote_options, remote_options_without_token_flag
from chatmq.core import redisconn
from chatmq.core.admin import ADMIN_TOKEN_TTL_S
from chatmq.core.auth import issue_token, token_claims
from chatmq.core.config import ADMIN_USER
from chatmq.core.control import Command
from chatmq.core.ids import is_valid_id
from chatmq.core.protocol import parse_topic
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import open_store

F = TypeVar("F", bound=Callable[..., Any])
MAX_TTL_S = 365 * 24 * 3600


def target_options(func: F) -> F:
    """--data-dir (secret key and what `chatmq up` recorded) and where the broker is."""
    func = click.option("--broker-port", type=int, default=None, help="broker port [env CHATMQ_BROKER_PORT; "
                        "default: what `chatmq up` recorded in the data dir]")(func)
    func = click.option("--broker-host", default=None, help="broker host [env CHATMQ_BROKER_HOST]")(func)
    func = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="the stack's data dir: secret key, store [env CHATMQ_DATA_DIR; default ./data]")(func)
    return func


def _target(data_dir: Path | None, broker_host: str | None, broker_port: int | None) -> Target:
    return resolve(data_dir, broker_host, broker_port)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _known_user(target: Target, user: str) -> None:
    if not is_valid_id(user):
        raise click.BadParameter(f"{user!r} is not a valid user id", param_hint="USER")
    store = open_store(target.settings.resolved_store_url)
    try:
        if store.get_user(user) is None:
            raise click.ClickException(f"unknown user {user!r}")
    finally:
        store.close()


# --- clients and kick -------------------------------------------------------------------------
@click.command()
@click.option("--user", default=None, help="only this user's devices")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@target_options
@remote_options
def clients(user: str | None, as_json: bool, data_dir: Path | None, broker_host: str | None,
            broker_port: int | None, server: str | None, admin_token: str | None) -> None:
    """List the devices connected to the running broker (or --server's)."""
    if server:
        with admin_session(server, admin_token) as admin:
            rows = admin.clients(user)
    else:
        with AdminChannel(_target(data_dir, broker_host, broker_port)) as channel:
            rows = channel.request(Command.CLIENTS, {"user": user} if user else {})
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    table = [(row["client_id"], row["user"] or "-", row["address"], _when(row["connected_since"]),
              f"{row['keepalive_s']:g}s", str(row["subscriptions"]), str(row["queued"]))
             for row in sorted(rows, key=lambda r: (r["user"] or "", r["client_id"]))]
    for line in columns(("CLIENT_ID", "USER", "ADDRESS", "SINCE", "KEEPALIVE", "SUBS", "QUEUED"), table):
        click.echo(line)


@click.command()
@click.argument("user", required=False)
@click.option("--client", "client_id", default=None, help="kick one connection by client id instead")
@click.option("--disable", is_flag=True, help="also disable USER, so its devices cannot log in again")
@target_options
@remote_options
def kick(user: str | None, client_id: str | None, disable: bool, data_dir: Path | None, broker_host: str | None,
         broker_port: int | None, server: str | None, admin_token: str | None) -> None:
    """Disconnect USER's devices (or one --client) now. Devices may reconnect unless --disable."""
    if (user is None) == (client_id is None):
        raise click.UsageError("give exactly one of USER or --client ID")
    if disable and user is None:
        raise click.UsageError("--disable needs USER")
    if server:
        with admin_session(server, admin_token) as admin:
            result = admin.kick(user, client_id, disable=disable)
        _say_kicked(result["kicked"], user if disable else None)
        return
    target = _target(data_dir, broker_host, broker_port)
    if user is not None:
        _known_user(target, user)
    if disable and user is not None:
        store = open_store(target.settings.resolved_store_url)
        try:
            store.set_disabled(user, True)
        finally:
            store.close()
    with AdminChannel(target) as channel:
        try:
            result = channel.request(Command.KICK, {"user": user} if user else {"client_id": client_id})
        except RequestFailed as exc:
            if exc.code == "unknown_client":
                raise click.ClickException(f"unknown client id {client_id!r} (not connected)") from None
            raise
    _say_kicked(result["kicked"], user if disable else None)


def _say_kicked(kicked: list[str], disabled: str | None) -> None:
    suffix = f"; {disabled} disabled" if disabled else ""
    click.echo(f"kicked {len(kicked)} connection(s){': ' + ', '.join(kicked) if kicked else ''}{suffix}")


# --- tail -------------------------------------------------------------------------------------
@click.command()
@click.argument("conv", required=False)
@click.option("--all", "all_convs", is_flag=True, help="every conversation")
@click.option("--json", "as_json", is_flag=True, help="the message payloads, one JSON object per line")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after COUNT messages")
@target_options
def tail(conv: str | None, all_convs: bool, as_json: bool, count: int | None, data_dir: Path | None,
         broker_host: str | None, broker_port: int | None) -> None:
    """Follow new messages of CONV (or --all) live, one line each: seq, time, sender. Ctrl-C ends it."""
    if (conv is None) == (not all_convs):
        raise click.UsageError("give exactly one of CONV or --all")
    target = _target(data_dir, broker_host, broker_port)
    if conv is not None:
        store = open_store(target.settings.resolved_store_url)
        try:
            if store.get_conversation(conv) is None:
                raise click.ClickException(f"unknown conversation {conv!r}")
        finally:
            store.close()
    session = MqttSession(target, service=True)
    seen = 0
    try:
        session.subscribe("chat/+/msg" if all_convs else f"chat/{conv}/msg")
        click.echo(f"following {'all conversations' if all_convs else conv} (Ctrl-C to stop)", err=True)
        while count is None or seen < count:
            if session.lost.is_set():
                raise Unreachable("lost the broker")
            try:
                topic, payload = session.messages.get(timeout=0.5)
            except Exception:
                continue
            parsed = parse_topic(topic)
            try:
                message = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            seen += 1
            if as_json:
                click.echo(orjson.dumps(message).decode())
            else:
                where = parsed.conv if parsed else topic
                body = "(notice: fetch from history)" if message.get("notice") else message.get("body", "")
                click.echo(f"{where} #{message.get('seq')} {_when(message.get('ts'))} {message.get('sender')}: {body}")
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


# --- stats ------------------------------------------------------------------------------------
def _scrape(url: str | None) -> dict[str, float] | None:
    """Samples of a Prometheus endpoint as {name{labels}: value}; None if unreachable."""
    if url is None:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" in sample.labels:
                continue
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _avg_ms(samples: dict[str, float], name: str) -> float | None:
    count = samples.get(f"{name}_count", 0.0)
    return samples.get(f"{name}_sum", 0.0) / count * 1000 if count else None


def _broker_rows(broker: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("broker connections", str(broker["connections"])),
        ("broker sessions", str(broker["sessions"])),
        ("broker messages in/s", f"{broker['in_per_s']:.1f}"),
        ("broker messages out/s", f"{broker['out_per_s']:.1f}"),
        ("broker queued (offline)", str(broker["queued"])),
        ("broker rejected (total)", str(broker["rejected_total"])),
    ]


def _figures(target: Target, channel: AdminChannel) -> list[tuple[str, str]]:
    rows = _broker_rows(channel.request(Command.STATS))
    bridge = _scrape(target.metrics_url("bridge"))
    if bridge is None:
        rows.append(("bridge", "metrics not reachable"))
    else:
        depth = sum(v for k, v in bridge.items() if k.startswith("chatmq_bridge_queue_depth"))
        ack = _avg_ms(bridge, "chatmq_bridge_ack_latency_seconds")
        write = _avg_ms(bridge, "chatmq_bridge_store_write_seconds")
        rows += [
            ("bridge connected", "yes" if bridge.get("chatmq_bridge_connected") else "no"),
            ("bridge lag (queued sends)", f"{depth:g}"),
            ("bridge sends (total)", f"{bridge.get('chatmq_bridge_sends_total', 0):g}"),
            ("bridge ack latency (avg)", f"{ack:.1f} ms" if ack is not None else "-"),
            ("store write latency (avg)", f"{write:.1f} ms" if write is not None else "-"),
        ]
    rows.append(("redis latency", _redis_latency(target.redis_url)))
    return rows


def _redis_latency(url: str) -> str:
    client = redisconn.connect(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        started = time.perf_counter()
        client.ping()
        return f"{(time.perf_counter() - started) * 1000:.2f} ms"
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()


@click.command()
@click.option("--watch", is_flag=True, help="refresh in place until Ctrl-C")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="seconds")
@click.option("--count", type=click.IntRange(min=1), default=None, help="with --watch: stop after COUNT refreshes")
@target_options
@remote_options
def stats(watch: bool, interval: float, count: int | None, data_dir: Path | None, broker_host: str | None,
          broker_port: int | None, server: str | None, admin_token: str | None) -> None:
    """Broker and bridge figures: connections, messages per second, queues, latencies."""
    if server:
        with admin_session(server, admin_token) as admin:
            _show_stats(lambda: _remote_figures(admin.stats()), watch, interval, count)
        return
    target = _target(data_dir, broker_host, broker_port)
    with AdminChannel(target) as channel:
        _show_stats(lambda: _figures(target, channel), watch, interval, count)


def _remote_figures(answer: dict[str, Any]) -> list[tuple[str, str]]:
    broker = answer["broker"]
    rows = [("users", str(answer["users"])), ("conversations", str(answer["conversations"]))]
    if "error" in broker:
        return [*rows, ("broker", str(broker["error"]))]
    return [*rows, *_broker_rows(broker)]


def _show_stats(figures: Callable[[], list[tuple[str, str]]], watch: bool, interval: float,
                count: int | None) -> None:
    interactive = click.get_text_stream("stdout").isatty()
    shown = 0
    try:
        while True:
            rows = figures()
            text = "\n".join(f"{name:<28}{value}" for name, value in rows)
            if watch and interactive:
                click.echo("\x1b[H\x1b[2J" + text)  # home and clear: the table is redrawn in place
            else:
                click.echo(text + ("\n" if watch else ""))
            shown += 1
            if not watch or (count is not None and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


# --- tokens -----------------------------------------------------------------------------------
@click.group()
def token() -> None:
    """Issue and revoke API/MQTT tokens."""


@token.command("issue")
@click.argument("user", required=False)
@click.option("--admin", "admin_scope", is_flag=True,
              help="an admin-scoped token (the admin HTTP API, --server) instead of a user's; needs only the key")
@click.option("--ttl", type=click.IntRange(60, MAX_TTL_S), default=None,
              help="lifetime in seconds [default: the deployment's token_ttl_s; 3600 with --admin]")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the secret key and store are [env CHATMQ_DATA_DIR]")
@remote_options
def token_issue(user: str | None, admin_scope: bool, ttl: int | None, data_dir: Path | None, server: str | None,
                admin_token: str | None) -> None:
    """Print a token for USER (usable as MQTT password and API bearer token), or with --admin an
    admin-scoped token, signed with the deployment's secret key (CHATMQ_SECRET_KEY or the data dir's)."""
    if (user is None) != admin_scope:
        raise click.UsageError("give USER, or --admin for an admin-scoped token")
    if server and admin_scope and not admin_token and not os.environ.get("CHATMQ_SECRET_KEY"):
        raise click.UsageError(
            "an admin token is signed with the deployment's secret key: give it as CHATMQ_SECRET_KEY, "
            "or run this without --server (and CHATMQ_SERVER) where the data dir with the key is")
    if server:
        with admin_session(server, admin_token) as admin:
            answer = admin.issue_token(user, ttl, admin=admin_scope)
        token, expires_at = answer["token"], answer["expires_at"]
    elif admin_scope:
        issued = issue_token(resolve(data_dir).settings.load_secret(), ADMIN_USER, ttl or ADMIN_TOKEN_TTL_S,
                             admin=True)
        token, expires_at = issued.token, issued.expires_at
    else:
        assert user is not None
        with admin_session(None, None, data_dir) as admin:
            answer = admin.issue_token(user, ttl)
        token, expires_at = answer["token"], answer["expires_at"]
    click.echo(token)
    click.echo(f"expires {_when(expires_at)} UTC", err=True)


@token.command("revoke")
@click.argument("user", required=False)
@click.option("--token", "token_value", default=None, help="revoke this one token instead of all of USER's")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the secret key is [env CHATMQ_DATA_DIR]")
@click.option("--redis-url", default=None, help="redis://HOST:PORT/DB [env CHATMQ_REDIS_URL]")
@remote_options_without_token_flag
def token_revoke(user: str | None, token_value: str | None, data_dir: Path | None, redis_url: str | None,
                 server: str | None, admin_token: str | None) -> None:
    """Revoke every token of USER issued so far (or one --token). Live connections that logged in
    with a revoked token are closed within a second; passwords keep working."""
    if (user is None) == (token_value is None):
        raise click.UsageError("give exactly one of USER or --token TOKEN")
    if server:
        with admin_session(server, admin_token) as admin:
            answer = admin.revoke_tokens(user, token_value)
        click.echo(f"token of {answer['user']} revoked" if token_value else
                   f"all tokens of {user} issued until now revoked")
        return
    target = resolve(data_dir)
    claims = None
    if token_value is not None:
        claims = token_claims(target.settings.load_secret(), token_value.strip())
        if claims is None:
            raise click.ClickException("not a valid token of this deployment (forged, malformed or expired)")
    else:
        assert user is not None
        _known_user(target, user)
    url = redis_url or target.redis_url
    client = redisconn.connect(url, socket_connect_timeout=2)
    revocations = TokenRevocations(client, max(target.settings.token_ttl_s, MAX_TTL_S))
    try:
        if claims is not None:
            if not revocations.revoke_token(claims):
                raise click.ClickException("this token cannot be revoked (it has no id or has expired)")
            click.echo(f"token of {claims['sub']} revoked")
        else:
            revocations.revoke_user(str(user))
            click.echo(f"all tokens of {user} issued until now revoked")
    except redis.RedisError as exc:
        raise Unreachable(f"redis at {url} is not reachable: {exc}") from None
    finally:
        client.close()


COMMANDS = (clients, kick, tail, stats, token)
