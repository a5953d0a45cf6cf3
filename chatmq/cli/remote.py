"""Where the admin commands act: on the store here (local mode, the embedded stack) or on a server
through its admin HTTP API (``--server URL`` with an admin token: remote mode, for a compose or
cluster deployment without database access).

Both sides offer chatmq.core.admin.Admin's methods and answer the same JSON-ready data, so each
command is written once. ``RemoteAdmin`` turns the API's errors back into ``AdminError``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

from chatmq.core.admin import ADMIN_TOKEN_TTL_S, KEEP, Admin, AdminError
from chatmq.core.auth import issue_token
from chatmq.core.config import ADMIN_USER

F = TypeVar("F", bound=Callable[..., Any])
TIMEOUT_S = 60.0


def remote_options(func: F) -> F:
    """--server and --token (also --admin-token): act through a server's admin API instead of on
    the local store."""
    return _remote_options(func, ("--token", "--admin-token"))


def remote_options_without_token_flag(func: F) -> F:
    """The same, for commands where --token means something else (the token to revoke)."""
    return _remote_options(func, ("--admin-token",))


def _remote_options(func: F, token_flags: tuple[str, ...]) -> F:
    func = click.option(*token_flags, "admin_token", envvar="CHATMQ_ADMIN_TOKEN", default=None,
                        help="admin-scoped token for --server (`chatmq token issue --admin`) [env CHATMQ_ADMIN_TOKEN; "
                             "default: one minted from CHATMQ_SECRET_KEY when set]")(func)
    func = click.option("--server", envvar="CHATMQ_SERVER", default=None, metavar="URL",
                        help="act through this chatmq API (e.g. https://chat.example.com) instead of the local "
                             "store [env CHATMQ_SERVER]")(func)
    return func


class RemoteAdmin:
    """chatmq.core.admin.Admin's operations over ``/v1/admin`` (urllib: a JSON call per operation)."""

    def __init__(self, server: str, token: str) -> None:
        self.base = server.rstrip("/") + "/v1/admin"
        self._token = token

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        given = {k: v for k, v in (query or {}).items() if v is not None}
        if given:
            url += "?" + urllib.parse.urlencode(given)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError("unreachable", f"the server at {self.base} is not reachable ({reason})") from None

    # --- users ---------------------------------------------------------------------------------
    def create_user(self, user_id: str, **fields: Any) -> Any:
        return self.call("POST", "/users", {"id": user_id, **_given(fields)})

    def list_users(self, after: str | None = None, limit: int | None = None) -> Any:
        return self.call("GET", "/users", query={"after": after, "limit": limit})

    def get_user(self, user_id: str) -> Any:
        return self.call("GET", f"/users/{_part(user_id)}")

    def update_user(self, user_id: str, **fields: Any) -> Any:
        body = {k: v for k, v in fields.items() if v is not KEEP and (v is not None or k in ("display_name", "avatar"))}
        return self.call("PATCH", f"/users/{_part(user_id)}", body)

    def delete_user(self, user_id: str) -> Any:
        return self.call("DELETE", f"/users/{_part(user_id)}")

    def import_users(self, rows: list[dict[str, Any]]) -> Any:
        return self.call("POST", "/users/import", {"users": rows})

    def presence(self, user_id: str) -> Any:
        return self.call("GET", f"/users/{_part(user_id)}/presence")

    # --- conversations -------------------------------------------------------------------------
    def create_conversation(self, conv_id: str, members: list[str], title: str | None = None) -> Any:
        body = {"id": conv_id, "members": list(members), **_given({"title": title})}
        return self.call("POST", "/conversations", body)

    def list_conversations(self, after: str | None = None, limit: int | None = None,
                           member: str | None = None) -> Any:
        return self.call("GET", "/conversations", query={"after": after, "limit": limit, "member": member})

    def get_conversation(self, conv_id: str) -> Any:
        return self.call("GET", f"/conversations/{_part(conv_id)}")

    def set_title(self, conv_id: str, title: str | None) -> Any:
        return self.call("PATCH", f"/conversations/{_part(conv_id)}", {"title": title})

    def add_member(self, conv_id: str, user_id: str) -> Any:
        return self.call("POST", f"/conversations/{_part(conv_id)}/members", {"user": user_id})

    def remove_member(self, conv_id: str, user_id: str) -> Any:
        return self.call("DELETE", f"/conversations/{_part(conv_id)}/members/{_part(user_id)}")

    def import_conversations(self, rows: list[dict[str, Any]]) -> Any:
        return self.call("POST", "/conversations/import", {"conversations": rows})

    def delete_conversation(self, conv_id: str) -> Any:
        return self.call("DELETE", f"/conversations/{_part(conv_id)}")

    def redact_message(self, conv_id: str, seq: int) -> Any:
        return self.call("DELETE", f"/conversations/{_part(conv_id)}/messages/{int(seq)}")

    def set_retention(self, conv_id: str, days: int | None) -> Any:
        return self.call("PUT", f"/conversations/{_part(conv_id)}/retention", {"days": days})

    def history(self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Any:
        return self.call("GET", f"/conversations/{_part(conv_id)}/messages",
                         query={"before": before, "after": after, "limit": limit})

    # --- tokens and the broker ------------------------------------------------------------------
    def issue_token(self, user_id: str | None, ttl_s: int | None = None, *, admin: bool = False) -> Any:
        return self.call("POST", "/tokens", {**_given({"user": user_id, "ttl_s": ttl_s}), "admin": admin})

    def revoke_tokens(self, user_id: str | None = None, token: str | None = None) -> Any:
        return self.call("POST", "/tokens/revoke", _given({"user": user_id, "token": token}))

    def clients(self, user: str | None = None) -> Any:
        return self.call("GET", "/clients", query={"user": user})["clients"]

    def kick(self, user: str | None = None, client_id: str | None = None, *, disable: bool = False) -> Any:
        return self.call("POST", "/kick", {**_given({"user": user, "client_id": client_id}), "disable": disable})

    def stats(self) -> Any:
        return self.call("GET", "/stats")

    # --- push targets, webhooks and the delivery log --------------------------------------------
    def push_targets(self, user_id: str) -> Any:
        return self.call("GET", f"/users/{_part(user_id)}/push-targets")

    def add_webhook(self, webhook_id: str, url: str, events: list[str] | None = None,
                    secret: str | None = None) -> Any:
        return self.call("POST", "/webhooks", {"id": webhook_id, "url": url,
                                               **_given({"events": events, "secret": secret})})

    def list_webhooks(self, *, secrets: bool = False) -> Any:
        if secrets:
            raise AdminError("bad_request", "--show-secrets works on the local store only: the admin API shows "
                                            "a webhook's secret only in the answer to its creation")
        return self.call("GET", "/webhooks")

    def remove_webhook(self, webhook_id: str) -> Any:
        return self.call("DELETE", f"/webhooks/{_part(webhook_id)}")

    def deliveries(self, channel: str | None = None, state: str | None = None, target: str | None = None,
                   limit: int | None = None) -> Any:
        return self.call("GET", "/deliveries", query={"channel": channel, "state": state, "target": target,
                                                      "limit": limit})

    def replay_deliveries(self, ids: list[str] | tuple[str, ...] = (), *, dead: bool = False,
                          channel: str | None = None, target: str | None = None) -> Any:
        return self.call("POST", "/deliveries/replay", {"ids": list(ids), "dead": dead,
                                                        **_given({"channel": channel, "target": target})})


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _api_error(exc: urllib.error.HTTPError) -> AdminError:
    try:
        error = json.loads(exc.read() or b"null")["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "error", f"HTTP {exc.code} {exc.reason}"
    finally:
        exc.close()
    if exc.code in (401, 403):
        return AdminError(code, f"the server refused the admin token ({message})")
    return AdminError(code, message)


def remote_token(token: str | None) -> str:
    """The given admin token, else one minted from CHATMQ_SECRET_KEY (the deployment's key)."""
    if token:
        return token.strip()
    secret = os.environ.get("CHATMQ_SECRET_KEY")
    if not secret:
        raise click.UsageError("--server needs an admin token: --token or CHATMQ_ADMIN_TOKEN "
                               "(`chatmq token issue --admin`), or CHATMQ_SECRET_KEY to mint one")
    return issue_token(secret, ADMIN_USER, ADMIN_TOKEN_TTL_S, admin=True).token


@contextmanager
def admin_session(server: str | None, admin_token: str | None, data_dir: Path | None = None,
                  store_url: str | None = None, *, broker: bool = False,
                  redis_url: str | None = None) -> Iterator[Admin | RemoteAdmin]:
    """The admin operations, remote (``server``) or local (the store of ``data_dir``/``store_url``,
    Redis and, with ``broker``, the running broker's admin channel); AdminError becomes the
    command's error and exit code (1 refused or unknown, 3 unreachable)."""
    from chatmq.cli.adminclient import EXIT_ERROR, Unreachable

    try:
        if server:
            yield RemoteAdmin(server, remote_token(admin_token))
        else:
            with local_admin(data_dir, store_url, broker=broker, redis_url=redis_url) as admin:
                yield admin
    except AdminError as exc:
        if exc.code in ("unavailable", "unreachable"):
            raise Unreachable(exc.message) from None
        error = click.ClickException(exc.message)
        error.exit_code = EXIT_ERROR
        raise error from None


@contextmanager
def local_admin(data_dir: Path | None, store_url: str | None, *, broker: bool = False,
                redis_url: str | None = None) -> Iterator[Admin]:
    from chatmq.cli.adminclient import LocalBroker, resolve
    from chatmq.cli.mosquitto_cmd import push_password_if_configured
    from chatmq.core import redisconn
    from chatmq.core.admin import MAX_TOKEN_TTL_S
    from chatmq.core.lifecycle import Lifecycle
    from chatmq.core.media import open_media_store
    from chatmq.core.membershipsync import wait_applied
    from chatmq.core.presence import Presence
    from chatmq.core.revocation import TokenRevocations
    from chatmq.core.store import open_store

    target = resolve(data_dir, store_url=store_url)
    settings = target.settings
    store = open_store(settings.resolved_store_url)
    media = open_media_store(settings)
    client = redisconn.connect(redis_url or target.redis_url, socket_connect_timeout=1, socket_timeout=2)
    presence = Presence(client, int(settings.presence_ttl_s * 1000))
    try:
        yield Admin(
            store=store, secret=settings.load_secret(), token_ttl_s=settings.token_ttl_s,
            revocations=TokenRevocations(client, max(settings.token_ttl_s, MAX_TOKEN_TTL_S)),
            presence_of=presence,
            broker=LocalBroker(target) if broker else None,
            lifecycle=Lifecycle(store, media, presence),
            password_set=push_password_if_configured,
            memberships_applied=partial(wait_applied, client, store.membership_version,
                                        settings.membership_apply_timeout_s),
            dotted_conversation_ids=settings.dotted_conversation_ids,
        )  # fmt: skip
    finally:
        client.close()
        media.close()
        store.close()
