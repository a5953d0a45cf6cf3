"""OpsBroker: ChatBroker plus the operator's view: metrics counters and the admin channel hook.

ChatBroker drops every client publish to a ``$`` topic (amqtt 0.12 let them through). The one
exception is the admin request topic: it is handed to the control handler (the admin plugin,
chatmq/broker/plugins/admin.py) before that drop, with the publishing session, so the plugin decides
who may use it. Counting happens inline: an integer add per event, no task, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.errors import MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session

from chatmq.broker import metrics
from chatmq.broker.core import ChatBroker
from chatmq.core.control import MEMBERSHIP_TOPIC, REQUEST_TOPIC

CONNECTED_AT_KEY = "chatmq.connected_at"  # ms since epoch, shown by the admin ``clients`` command
ControlHandler = Callable[[Session, ApplicationMessage], Awaitable[None]]


@dataclass
class Totals:
    """Plain running totals, for the admin channel's ``stats`` (rates are computed from samples)."""

    received: int = 0
    delivered: int = 0
    queued: int = 0
    rejected: int = 0
    connections: int = 0


_DENIAL_REASONS = {Action.PUBLISH: "publish_denied", Action.SUBSCRIBE: "subscribe_denied"}


class OpsBroker(ChatBroker):
    control_handler: ControlHandler | None = None  # set by the admin plugin when it is loaded

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.totals = Totals()
        self.started_at = time.time()
        super().__init__(*args, **kwargs)
        metrics.track(self)

    def reply(self, session: Session, topic: str, data: bytes) -> None:
        """Send to one connection only, through the ordinary ordered delivery path (QoS 1)."""
        self._enqueue(session, topic, data, 1)

    def _reject(self, reason: str) -> None:
        self.totals.rejected += 1
        metrics.REJECTED.labels(reason=reason).inc()

    async def _initialize_client_session(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._initialize_client_session(*args, **kwargs)
        except MQTTError:
            metrics.LOGINS_REFUSED.inc()
            raise

    async def _handle_client_session(
        self, reader: Any, writer: Any, client_session: Session, handler: BrokerProtocolHandler, server: Any,
        listener_name: str,
    ) -> None:
        self.totals.connections += 1
        metrics.CONNECTIONS.inc()
        client_session.attributes[CONNECTED_AT_KEY] = int(time.time() * 1000)
        await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)

    async def _route_publish(
        self, client_session: Session, handler: BrokerProtocolHandler, app_message: ApplicationMessage
    ) -> bool:
        self.totals.received += 1
        topic = app_message.topic or ""
        if topic == REQUEST_TOPIC and self.control_handler is not None:
            await self.control_handler(client_session, app_message)
            return True
        if topic.startswith("$") and topic != MEMBERSHIP_TOPIC:
            self._reject("reserved_topic")
        return await super()._route_publish(client_session, handler, app_message)

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        allowed = await super()._topic_filtering(session, topic, action)
        if not allowed and action in _DENIAL_REASONS:
            self._reject(_DENIAL_REASONS[action])
        return allowed

    async def _receive_allowed(self, session: Session, topic: str) -> bool:
        allowed = await super()._receive_allowed(session, topic)
        if not allowed:
            self._reject("receive_denied")
        return allowed

    async def _deliver(self, session: Session, broadcast: dict[str, Any], qos: int) -> bool:
        if session.transitions.state == "connected":
            self.totals.delivered += 1
        elif qos and not session.clean_session:
            self.totals.queued += 1
        return await super()._deliver(session, broadcast, qos)
