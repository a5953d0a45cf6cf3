"""The live objects the plugins share, and the task that keeps the membership view fresh.

amqtt builds each plugin from its dotted class path and a ``Config`` dataclass filled from the
broker config, so the server hands these objects to the plugins through that Config: no module
globals, and two brokers in one process (tests, embedded runs) never see each other's state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from chatcore.access import Identity
from chatcore.auth import Authenticator
from chatcore.membership import MembershipView
from chatcore.ratelimit import ConnectionRate, LoginThrottle

log = logging.getLogger(__name__)

# Where the auth plugin leaves the authenticated Identity for the access-control plugin.
IDENTITY_KEY = "chatmq.identity"
# Set instead of an identity for a client let in without credentials (allow_anonymous).
ANONYMOUS_KEY = "chatmq.anonymous"


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


async def keep_membership_fresh(refresher: MembershipRefresher, interval_s: float) -> None:
    """Poll the store so a membership change by any process reaches access checks without restart.

    A failing store keeps the last good view (access checks go on) and is logged once per outage.
    """
    failing = False
    while True:
        try:
            await refresher.refresh()
        except Exception:
            if not failing:
                log.exception("membership refresh failed; access checks keep the previous view")
            failing = True
        else:
            if failing:
                log.info("membership refresh recovered")
            failing = False
        await asyncio.sleep(interval_s)
