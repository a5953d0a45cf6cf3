"""chatmq's hooks as amqtt plugins, for stock amqtt only: the defect regression tests run stock
amqtt (``STOCK``, xfail strict) with the same logins and access rules as chatmq's broker, which
calls its hooks directly. amqtt loads plugins by dotted path, hence this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from chatmq.broker.hooks import Hooks
from chatmq.core.access import Action

_ACTIONS = {AmqttAction.SUBSCRIBE: Action.SUBSCRIBE, AmqttAction.PUBLISH: Action.PUBLISH,
            AmqttAction.RECEIVE: Action.RECEIVE}  # fmt: skip


def stock_plugins(hooks: Hooks) -> dict[str, Any]:
    return {f"{__name__}.HookAuth": {"hooks": hooks}, f"{__name__}.HookAcl": {"hooks": hooks}}


class HookAuth(BaseAuthPlugin):
    @dataclass
    class Config:
        hooks: Any

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: Hooks = self.config.hooks

    async def authenticate(self, *, session: Session) -> bool:
        if not await self.hooks.authenticate(session):
            return False
        return not session.will_flag or await self.hooks.acl_check(session, Action.WILL, session.will_topic or "")


class HookAcl(BaseTopicPlugin):
    @dataclass
    class Config:
        hooks: Any

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: Hooks = self.config.hooks

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: AmqttAction | None = None
    ) -> bool:
        access = _ACTIONS.get(action) if action is not None else None
        if session is None or topic is None or access is None:
            return False
        return await self.hooks.acl_check(session, access, topic)
