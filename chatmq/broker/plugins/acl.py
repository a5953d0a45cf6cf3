"""Access control: every SUBSCRIBE, PUBLISH and delivery (RECEIVE) is decided by
chatmq.core.access.authorize (the rule table), nothing else.

The RECEIVE check is what makes a membership change bite on existing subscriptions: a user removed
from a conversation keeps the subscription amqtt already granted but stops receiving through it
once the membership view refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass

from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import BaseContext
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session

from chatmq.broker.services import BrokerServices, session_identity
from chatmq.core.access import Action, Identity, authorize

_CACHE_MAX = 100_000  # (identity, action, topic) answers; cleared when full
_ACTIONS = {
    AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
    AmqttAction.PUBLISH: Action.PUBLISH,
    AmqttAction.RECEIVE: Action.RECEIVE,
}


class ChatAclPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        services: BrokerServices

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.services: BrokerServices = self.config.services
        self._cache: dict[tuple[Identity | None, Action, str], bool] = {}
        self._cache_version: object = None

    def _authorize(self, identity: Identity | None, action: Action, topic: str) -> bool:
        return authorize(identity, action, topic, self.services.membership,
                         open_outside=self.services.allow_anonymous)

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

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: AmqttAction | None = None
    ) -> bool:
        """Always a bool: amqtt 0.12 treats None as a denial anyway, so be explicit."""
        if session is None or topic is None or action is None:
            return False
        identity = session_identity(session.attributes)  # None: an anonymous client
        ours = _ACTIONS.get(action)
        if ours is None:
            return False
        if ours is Action.RECEIVE:
            return self._allowed(identity, ours, topic)  # in memory; the poller keeps the view fresh
        if ours is Action.PUBLISH and self._allowed(identity, ours, topic):
            return True
        if ours is Action.SUBSCRIBE and self._authorize(identity, ours, topic):
            return True
        if identity is None:
            return False
        # A SUBSCRIBE or PUBLISH denial is rare: confirm it against the store's current memberships.
        await self.services.confirm_membership()
        return self._authorize(identity, ours, topic)

