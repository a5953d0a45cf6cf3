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
only once the guard has unbound it.

A pass costs what the change concerns, not what RabbitMQ holds: the view's catch-up says who may
have lost access (``MembershipView.refresh_losses``: the removed members, and fellow members who
share nothing with them any more), and the guard reads the bindings of those users' session queues
only (the client ids each one holds, ``ClientIds.of_user``; two management calls per client id).
It passes over them again one refresh interval later (the API's hook views may have let a
subscription in on the old memberships meanwhile). A sweep over every session binding of the
exchange (one management call, its size growing with the devices' subscriptions) runs at start,
when the view had to be read whole, and every ``SWEEP_EVERY_S`` as a safety net; it also renews
the claims of the client ids it finds bound. Users a failed pass did not get to stay due.
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

from chatmq.adapters.rabbitmq.topics import SESSION_QUEUE_PREFIX, session_client_id, topic_of
from chatmq.core.access import Action, authorize, logged_in_identity
from chatmq.core.clientids import ClientIds
from chatmq.core.config import Settings
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import CHANGED_CHANNEL, AppliedVersions
from chatmq.core.revocation import AUTH_CHANGED_CHANNEL
from chatmq.core.store import Store

log = logging.getLogger("chatmq.rabbitmq")

SWEEP_EVERY_S = 300.0
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
        self._exchange_name = exchange

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

    def client_bindings(self, client_id: str) -> list[Binding]:
        """The bindings of ``client_id``'s session queues (qos0, qos1) to the exchange."""
        bindings = []
        for queue in (f"{SESSION_QUEUE_PREFIX}{client_id}qos0", f"{SESSION_QUEUE_PREFIX}{client_id}qos1"):
            response = self._http.get(f"/api/queues/{self._vhost}/{quote(queue, safe='')}/bindings")
            if response.status_code == 404:  # no such session, or no subscription of that QoS
                continue
            response.raise_for_status()
            bindings += [Binding(queue, client_id, row["routing_key"], row["properties_key"])
                         for row in response.json() if row.get("source") == self._exchange_name]  # fmt: skip
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
    """Unbind the session bindings chatmq's rules deny now: all of them (``check``) or those of the
    users a membership change concerns (``follow``); close a user's connections (``close_user``).
    Blocking; the runner (``run``) decides when."""

    def __init__(self, management: Management, store: Store, client_ids: ClientIds, *,
                 open_outside: bool = False) -> None:  # fmt: skip
        self.management = management
        self.store = store
        self.view = MembershipView(store)
        self._client_ids = client_ids
        self._open_outside = open_outside
        self._due: set[str] = set()  # users a caught-up change concerns whose queues are not checked yet

    def check(self) -> tuple[int, int]:
        """A sweep over every session binding: (the membership version enforced, bindings removed)."""
        self.view.refresh()
        version = self.view.version or 0
        bindings = self.management.session_bindings()
        owners = self._client_ids.owners({binding.client_id for binding in bindings})
        removed = self._enforce(bindings, owners)
        self._client_ids.renew(owners)
        self._due.clear()
        return version, removed

    def follow(self, again: set[str] | frozenset[str] = frozenset()) -> tuple[int, int, set[str] | None]:
        """Catch up and check the session queues of the users the change concerns, with ``again``
        and those a failed pass left due: (version, bindings removed, the users the change
        concerns; None when the view was read whole and this was a sweep)."""
        losers = self.view.refresh_losses()
        if losers is None:
            version, removed = self.check()
            return version, removed, None
        self._due |= losers | again
        removed = 0
        for user in sorted(self._due):
            client_ids = self._client_ids.of_user(user)
            bindings = [b for client_id in client_ids for b in self.management.client_bindings(client_id)]
            removed += self._enforce(bindings, dict.fromkeys(client_ids, user))
            self._due.discard(user)
        return self.view.version or 0, removed, losers

    def _enforce(self, bindings: list[Binding], owners: dict[str, str]) -> int:
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
        return removed

    def close_user(self, user: str) -> int:
        closed = self.management.close_connections(user, "chatmq: credentials changed")
        if closed:
            log.info("closed %d connection(s) of %s: its credentials changed", closed, user)
        return closed


def run(guard: SessionGuard, redis_client: Any, name: str, stop: threading.Event, *,
        refresh_s: float = 0.5, sweep_every_s: float = SWEEP_EVERY_S,
        on_pass: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
    """Follow membership and credential changes until ``stop`` is set (see the module docstring)."""
    applied = AppliedVersions(redis_client)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANGED_CHANNEL, AUTH_CHANGED_CHANNEL)
    sweep_at = 0.0  # a sweep first
    again: set[str] = set()  # users to check once more at again_at
    again_at = float("inf")
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
                rechecking, swept = now >= again_at, now >= sweep_at
                if swept:
                    losers = guard.view.refresh_losses() or set()  # for the pass again below
                    version, removed = guard.check()
                    sweep_at = now + sweep_every_s
                else:
                    version, removed, concerned = guard.follow(again if rechecking else frozenset())
                    if concerned is None:  # the view was read whole: that was a sweep
                        swept, sweep_at = True, now + sweep_every_s
                    losers = concerned or set()
                if rechecking:
                    again, again_at = set(), float("inf")
                if losers:  # once more a refresh interval later
                    again |= losers
                    again_at = now + refresh_s
                applied.report(name, version)
                if on_pass is not None and (swept or losers or rechecking):
                    on_pass(version, removed)
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
    return SessionGuard(management, store, ClientIds(redis_client, settings.rabbitmq_client_id_ttl_s),
                        open_outside=settings.allow_anonymous)
