"""The live objects the plugins share, and the task that keeps the membership view fresh.

amqtt builds each plugin from its dotted class path and a ``Config`` dataclass filled from the
broker config, so the server hands these objects to the plugins through that Config: no module
globals, and two brokers in one process (tests, embedded runs) never see each other's state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatmq.core import redisconn
from chatmq.core.access import Identity
from chatmq.core.auth import Authenticator
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import AppliedVersions
from chatmq.core.ratelimit import ConnectionRate, LoginThrottle

log = logging.getLogger(__name__)

REACH_TIMEOUT_S = 10.0
# Where the login hook leaves the authenticated Identity for the access checks.
IDENTITY_KEY = "chatmq.identity"
# Set instead of an identity for a client let in without credentials (allow_anonymous).
ANONYMOUS_KEY = "chatmq.anonymous"
CONNECTED_AT_KEY = "chatmq.connected_at"  # ms since epoch, shown by the admin ``clients`` command


class MembershipRefresher:
    """Refreshes a MembershipView from the event loop; concurrent callers share one refresh.

    A caller may only reuse a refresh that STARTED after it asked: one already running when it
    asked may have read the store before the change the caller needs to see.
    """

    def __init__(self, view: MembershipView) -> None:
        self.view = view
        self._lock = asyncio.Lock()
        self._started = 0  # refreshes begun so far
        self._completed = 0  # the start number of the newest finished refresh

    async def refresh(self) -> None:
        ticket = self._started
        async with self._lock:
            if self._completed > ticket:
                return  # a refresh that began after this call finished while it waited
            self._started += 1
            number = self._started
            try:
                await asyncio.to_thread(self.view.refresh)
            finally:
                self._completed = number


@dataclass(frozen=True, slots=True)
class BrokerServices:
    authenticator: Authenticator
    membership: MembershipView
    refresher: MembershipRefresher
    allow_anonymous: bool = False  # plain MQTT for anyone, outside the chat namespaces only
    throttle: LoginThrottle | None = None  # failed-login limits per user and per address
    connections: ConnectionRate | None = None  # CONNECT attempts per address
    applied: AppliedVersions | None = None  # where this broker reports the membership version it applied
    name: str = f"{socket.gethostname()}:{os.getpid()}"  # this broker among the live ones

    async def reach_membership(self, version: int, timeout_s: float = REACH_TIMEOUT_S, *, report: bool = True) -> bool:
        """Catch the view up to at least ``version`` (the bridge's fence, chatmq.core.membershipsync);
        False if the store could not be read within ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        delay = 0.05
        while (self.membership.version or 0) < version:
            try:
                await self.refresher.refresh()
            except Exception as error:
                log.warning("membership refresh to version %d failed (%s); retrying", version, error)
            if (self.membership.version or 0) >= version:
                break
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        if report:
            await self.report_membership()
        return True

    async def report_membership(self) -> None:
        """Tell the API which membership version this broker enforces (chatmq.core.membershipsync)."""
        if self.applied is not None and self.membership.version is not None:
            try:
                await asyncio.to_thread(self.applied.report, self.name, self.membership.version)
            except Exception as error:
                log.warning("could not report the applied membership version: %s", error)

    async def confirm_membership(self) -> None:
        """Re-read memberships now, before a denial that may only reflect a stale view.

        Without this, a device told "you were added to conv X" (by the API or an admin) could be
        refused for up to one poll interval. It costs one cheap version query when nothing changed.
        """
        await self.refresher.refresh()


def session_identity(attributes: dict[str, Any]) -> Identity | None:
    identity = attributes.get(IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


def session_owner(attributes: dict[str, Any]) -> dict[str, object]:
    """Who logged in, as plain data: stored with a persistent session and compared on takeover."""
    identity = session_identity(attributes)
    if identity is not None:
        return {"user": identity.user, "service": identity.is_service}
    return {"anonymous": bool(attributes.get(ANONYMOUS_KEY))}


def restore_owner(attributes: dict[str, Any], owner: dict[str, object]) -> None:
    attributes.pop(IDENTITY_KEY, None)
    attributes.pop(ANONYMOUS_KEY, None)
    if isinstance(owner.get("user"), str):
        attributes[IDENTITY_KEY] = Identity(str(owner["user"]), bool(owner.get("service")))
    elif owner.get("anonymous"):
        attributes[ANONYMOUS_KEY] = True


async def keep_membership_fresh(
    refresher: MembershipRefresher, interval_s: float, report: Callable[[], Any] | None = None
) -> None:
    """Poll the store so a membership change by any process reaches access checks without restart.

    A failing store keeps the last good view (access checks go on) and is logged once per outage.
    """
    failing = False
    while True:
        try:
            await refresher.refresh()
            if report is not None:
                await report()
        except Exception:
            if not failing:
                log.exception("membership refresh failed; access checks keep the previous view")
            failing = True
        else:
            if failing:
                log.info("membership refresh recovered")
            failing = False
        await asyncio.sleep(interval_s)


class RedisListener:
    """One thread that follows Redis pub/sub channels and hands each message to its handler on the
    event loop (a thread: works for a single Redis and a Redis Cluster alike). Reconnects by itself;
    an outage is logged once."""

    RECONNECT_S = 1.0

    def __init__(self, url: str, handlers: dict[str, Callable[[str], Any]], name: str) -> None:
        self._url = url
        self._handlers = handlers
        self._name = name
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                client = redisconn.connect(self._url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(*self._handlers)
                if failing:
                    log.info("%s: listening again", self._name)
                failing = False
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else \
                            str(message["channel"])
                        handler = self._handlers.get(channel)
                        if handler is not None and self._loop is not None:
                            self._loop.call_soon_threadsafe(handler, message["data"].decode(errors="replace"))
                pubsub.close()
                client.close()
            except Exception as exc:
                if not failing:
                    log.warning("%s lost Redis (%s); retrying", self._name, exc)
                failing = True
                self._stop.wait(self.RECONNECT_S)
