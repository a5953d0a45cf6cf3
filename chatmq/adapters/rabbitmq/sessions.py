"""What RabbitMQ granted before a change, brought back within chatmq's rules: the session guard.

RabbitMQ asks chatmq once per subscription (when it binds the session queue to the MQTT exchange)
and never per delivery. A member removed from a conversation, or a user who no longer shares one
with a peer, keeps the binding, and a persistent session (``clean_session=false``) keeps queuing
through it while the device is offline and delivers it all on resume, unchecked. The guard fixes
that from outside: it lists the session queues' bindings through the management HTTP API, asks
``chatmq.core.access.authorize`` about each (the owner of the queue's client id is the one the login
hook claimed, chatmq.core.clientids), and deletes every binding the rules deny now. A revoked token or
a disabled user (``AUTH_CHANGED_CHANNEL``) closes that user's connections (again for a few seconds:
the management API lists a new connection only with its next statistics): their next login is
asked again.

It follows changes the way chatmq's brokers do (chatmq.core.membershipsync): woken by the API's
notice on ``CHANGED_CHANNEL``, polling the store's membership version between notices, and
reporting the version it enforced in ``AppliedVersions``, so the API answers a member's removal
only once the guard has unbound it. A pass runs again one refresh interval later (the API's hook
views may have let a subscription in on the old memberships meanwhile), and once a minute.

Each pass reads every session binding of the MQTT exchange (one management call; the cost grows
with connected and persistent devices: docs/brokers.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import redis

from chatmq.adapters.rabbitmq.topics import session_client_id, topic_of
from chatmq.core.access import Action, authorize, logged_in_identity
from chatmq.core.clientids import ClientIds
from chatmq.core.config import Settings
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import CHANGED_CHANNEL, AppliedVersions
from chatmq.core.revocation import AUTH_CHANGED_CHANNEL
from chatmq.core.store import Store

log = logging.getLogger("chatmq.rabbitmq")

FULL_PASS_EVERY_S = 60.0
# The management API lists connections from statistics it collects every 5 s (RabbitMQ's
# collect_statistics_interval): a connection opened just before a credential change may show up
# only then, so the guard closes a user's connections again for this long after the change.
CLOSE_FOR_S = 12.0


@dataclass(frozen=True, slots=True)
class Binding:
    queue: str
    client_id: str
    routing_key: str
    properties_key: str


class Management:
    """The few calls of RabbitMQ's management HTTP API the guard needs, on one vhost and exchange."""

    def __init__(self, url: str, vhost: str, exchange: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.username:
            raise ValueError("the management URL must be http(s)://USER:PASSWORD@HOST:PORT")
        base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._http = httpx.Client(base_url=base, auth=(parts.username, parts.password or ""), timeout=timeout_s)
        self._vhost = quote(vhost, safe="")
        self._exchange = quote(exchange, safe="")

    def close(self) -> None:
        self._http.close()

    def session_bindings(self) -> list[Binding]:
        """Every binding of an MQTT session queue to the exchange."""
        response = self._http.get(f"/api/exchanges/{self._vhost}/{self._exchange}/bindings/source")
        response.raise_for_status()
        bindings = []
        for row in response.json():
            client_id = (
                session_client_id(row.get("destination", "")) if row.get("destination_type") == "queue" else None
            )
            if client_id is not None:
                bindings.append(Binding(row["destination"], client_id, row["routing_key"], row["properties_key"]))
        return bindings

    def unbind(self, binding: Binding) -> None:
        path = "/".join(quote(part, safe="") for part in (binding.queue, binding.properties_key))
        response = self._http.delete(f"/api/bindings/{self._vhost}/e/{self._exchange}/q/{path}")
        if response.status_code != 404:  # already gone: the device unsubscribed, or its session ended
            response.raise_for_status()

    def close_connections(self, user: str, reason: str) -> int:
        response = self._http.get("/api/connections", params={"columns": "name,user,vhost"})
        response.raise_for_status()
        names = [row["name"] for row in response.json() if row.get("user") == user]
        for name in names:
            closed = self._http.delete(f"/api/connections/{quote(name, safe='')}", headers={"X-Reason": reason})
            if closed.status_code != 404:
                closed.raise_for_status()
        return len(names)


class SessionGuard:
    """One pass: unbind every session binding chatmq's rules deny now (``check``); close a user's
    connections (``close_user``). Blocking; the runner (``run``) decides when."""

    def __init__(self, management: Management, store: Store, client_ids: ClientIds, *,
                 open_outside: bool = False) -> None:  # fmt: skip
        self.management = management
        self.store = store
        self.view = MembershipView(store)
        self._client_ids = client_ids
        self._open_outside = open_outside

    def check(self) -> tuple[int, int]:
        """(the membership version enforced, bindings removed)."""
        self.view.refresh()
        version = self.view.version or 0
        bindings = self.management.session_bindings()
        owners = self._client_ids.owners({binding.client_id for binding in bindings})
        removed = 0
        for binding in bindings:
            owner = owners.get(binding.client_id)
            identity = logged_in_identity(owner) if owner is not None else None  # unclaimed: nobody's
            topic = topic_of(binding.routing_key)
            if authorize(identity, Action.SUBSCRIBE, topic, self.view, open_outside=self._open_outside):
                continue
            self.management.unbind(binding)
            removed += 1
            log.info("unbound %s from %s (user %s): the rules deny it now", topic, binding.queue, owner)
        return version, removed

    def close_user(self, user: str) -> int:
        closed = self.management.close_connections(user, "chatmq: credentials changed")
        if closed:
            log.info("closed %d connection(s) of %s: its credentials changed", closed, user)
        return closed


def run(guard: SessionGuard, redis_client: Any, name: str, stop: threading.Event, *,
        refresh_s: float = 0.5, on_pass: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
    """Follow membership and credential changes until ``stop`` is set (see the module docstring)."""
    applied = AppliedVersions(redis_client)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANGED_CHANNEL, AUTH_CHANGED_CHANNEL)
    known: int | None = None  # the membership version the last pass enforced
    again_at = full_at = 0.0
    closing: dict[str, float] = {}  # user -> until when its connections are closed again
    try:
        while not stop.is_set():
            try:
                now = time.monotonic()
                for user in _changed_users(pubsub, refresh_s):
                    closing[user] = now + CLOSE_FOR_S
                for user, until in sorted(closing.items()):
                    guard.close_user(user)
                    if time.monotonic() >= until:
                        del closing[user]
                now = time.monotonic()
                if guard.store.membership_version() != known:
                    again_at = now + refresh_s  # the pass now, and one more then
                elif now >= again_at:
                    again_at = float("inf")
                elif now < full_at:
                    applied.report(name, known or 0)
                    continue
                known, removed = guard.check()
                full_at = now + FULL_PASS_EVERY_S
                applied.report(name, known)
                if on_pass is not None:
                    on_pass(known, removed)
            except (httpx.HTTPError, redis.RedisError) as exc:
                log.warning("session guard: %s; retrying", exc)
                stop.wait(refresh_s)
    finally:
        pubsub.close()
        with contextlib.suppress(redis.RedisError):
            applied.forget(name)


def _changed_users(pubsub: Any, wait_s: float) -> set[str]:
    """Users named on AUTH_CHANGED_CHANNEL while waiting up to ``wait_s`` for any notice (a
    membership notice only cuts the wait short: the caller reads the version)."""
    users: set[str] = set()
    message = pubsub.get_message(timeout=wait_s)
    while message is not None:
        if _text(message["channel"]) == AUTH_CHANGED_CHANNEL:
            users.add(_text(message["data"]))
        message = pubsub.get_message(timeout=0)
    return users


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def guard_from_settings(settings: Settings, store: Store, redis_client: Any) -> SessionGuard:
    if not settings.rabbitmq_management_url:
        raise ValueError("CHATMQ_RABBITMQ_MANAGEMENT_URL is not set")
    management = Management(settings.rabbitmq_management_url, settings.rabbitmq_vhost, settings.rabbitmq_exchange)
    return SessionGuard(management, store, ClientIds(redis_client), open_outside=settings.allow_anonymous)
