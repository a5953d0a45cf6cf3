"""Access control: every WILL, SUBSCRIBE, PUBLISH and delivery (RECEIVE) is decided by
chatmq.core.access.authorize (the rule table), nothing else.

The RECEIVE check is what makes a membership change bite on existing subscriptions: a user removed
from a conversation keeps the subscription it was granted but stops receiving through it once the
membership view refreshes. The bridge's membership notice (``$CONTROL/chatmq/v1/membership``, the
fence of chatmq.core.membershipsync) is followed here too: it is about the data these checks read.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.session import Session

from chatmq.broker.hooks.control import Control
from chatmq.broker.services import BrokerServices, session_identity
from chatmq.core.access import Action, Identity, authorize
from chatmq.core.membershipsync import parse_notice

log = logging.getLogger(__name__)

_CACHE_MAX = 100_000  # (identity, action, topic) answers; cleared when full


class AccessControl:
    def __init__(self, services: BrokerServices) -> None:
        self.services = services
        self._cache: dict[tuple[Identity | None, Action, str], bool] = {}
        self._cache_version: object = None
        self._reports: set[asyncio.Task[None]] = set()

    def _authorize(self, identity: Identity | None, action: Action, topic: str) -> bool:
        return authorize(identity, action, topic, self.services.membership,
                         open_outside=self.services.allow_anonymous)  # fmt: skip

    def _allowed(self, identity: Identity | None, action: Action, topic: str) -> bool:
        """RECEIVE runs once per recipient per message and PUBLISH once per message: their answers
        are remembered until the membership view changes. ``authorize`` depends on nothing else
        (identity, action, topic, memberships), so a removed member is cut at the same moment as
        without the cache."""
        membership = self.services.membership
        version = getattr(membership, "version", None)
        if version is None:
            return self._authorize(identity, action, topic)
        if version != self._cache_version or len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
            self._cache_version = version
        key = (identity, action, topic)
        allowed = self._cache.get(key)
        if allowed is None:
            allowed = self._cache[key] = self._authorize(identity, action, topic)
        return allowed

    async def check(self, session: Session, action: Action, topic: str) -> bool:
        identity = session_identity(session.attributes)  # None: an anonymous client
        if action is Action.RECEIVE:
            return self._allowed(identity, action, topic)  # in memory; the poller keeps the view fresh
        if action is Action.WILL:
            return self._authorize(identity, action, topic)
        if action is Action.PUBLISH and self._allowed(identity, action, topic):
            return True
        if action is Action.SUBSCRIBE and self._authorize(identity, action, topic):
            return True
        if identity is None:
            return False
        # A SUBSCRIBE or PUBLISH denial is rare: confirm it against the store's current memberships.
        await self.services.confirm_membership()
        return self._authorize(identity, action, topic)

    async def follow_fence(self, session: Session, payload: bytes) -> Control:
        """The bridge's notice that memberships are at version V (chatmq.core.membershipsync): catch
        the view up before its connection's next packet is read, so what the bridge publishes next
        is checked against memberships at least that new. A store that cannot be read refuses it
        (the broker closes the bridge's connection, unacknowledged: it resends once it reconnects).
        From anyone but the bridge's service identity it is not a notice."""
        identity = session_identity(session.attributes)
        if identity is None or not identity.is_service:
            return Control.NOT_MINE
        version = parse_notice(payload)
        if version is None:
            log.warning("unreadable membership notice from the bridge: %r", payload[:64])
            return Control.HANDLED
        if not await self.services.reach_membership(version, report=False):
            log.error("membership view cannot reach version %d: closing the bridge's connection", version)
            return Control.REFUSED
        report = asyncio.ensure_future(self.services.report_membership())  # for the API, off this path
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)
        return Control.HANDLED
