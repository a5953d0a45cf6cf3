"""OpsBroker: ChatBroker plus the operator's view: metrics counters, and the ``BrokerView`` the
hooks see (chatmq/broker/hooks: the admin channel lists, kicks and counts through it).

Counting happens inline: an integer add per event, no task, no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from amqtt.errors import MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session

from chatmq.broker import metrics
from chatmq.broker.chatbroker import ChatBroker
from chatmq.broker.services import CONNECTED_AT_KEY
from chatmq.core.access import Action


@dataclass
class Totals:
    """Plain running totals, for the admin channel's ``stats`` (rates are computed from samples)."""

    received: int = 0
    delivered: int = 0
    queued: int = 0
    rejected: int = 0
    connections: int = 0


_DENIAL_REASONS = {Action.PUBLISH: "publish_denied", Action.SUBSCRIBE: "subscribe_denied",
                   Action.RECEIVE: "receive_denied"}  # fmt: skip


class OpsBroker(ChatBroker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.totals = Totals()
        self.started_at = time.time()
        super().__init__(*args, **kwargs)
        metrics.track(self)

    # ---- lifecycle: the hooks run while the broker does -----------------------------------------

    async def start(self) -> None:
        await super().start()
        await self.hooks.start(self)

    async def shutdown(self) -> None:
        try:
            await self.hooks.stop()
        finally:
            await super().shutdown()

    # ---- BrokerView (chatmq/broker/hooks) ---------------------------------------------------------------

    def connected(self) -> list[Session]:
        return [s for s, _h in list(self.sessions.values()) if s.transitions.is_connected()]

    def kept_sessions(self) -> list[Session]:
        return [s for s, _h in list(self.sessions.values())]

    def session(self, client_id: str) -> Session | None:
        return self.sessions.get(client_id, (None, None))[0]

    def filter_count(self) -> int:
        return len(self._routing_index)

    async def disconnect(self, session: Session) -> None:
        handler = self.sessions.get(session.client_id or "", (None, None))[1]
        if handler is not None:
            await handler.handle_connection_closed()

    def reply(self, session: Session, topic: str, data: bytes) -> None:
        """Send to one connection only, through the ordinary ordered delivery path (QoS 1)."""
        self._enqueue(session, topic, data, 1)

    # ---- counting ------------------------------------------------------------------------------

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
    ) -> None:  # fmt: skip
        self.totals.connections += 1
        metrics.CONNECTIONS.inc()
        client_session.attributes[CONNECTED_AT_KEY] = int(time.time() * 1000)
        await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)

    async def _route_publish(
        self, client_session: Session, handler: BrokerProtocolHandler, app_message: ApplicationMessage
    ) -> bool:
        self.totals.received += 1
        return await super()._route_publish(client_session, handler, app_message)

    async def _acl_check(self, session: Session, access: Action, topic: str) -> bool:
        allowed = await super()._acl_check(session, access, topic)
        if not allowed and access in _DENIAL_REASONS:
            self._reject(_DENIAL_REASONS[access])
        return allowed

    async def _deliver(self, session: Session, broadcast: dict[str, Any], qos: int) -> bool:
        if session.transitions.state == "connected":
            self.totals.delivered += 1
        elif qos and not session.clean_session:
            self.totals.queued += 1
        return await super()._deliver(session, broadcast, qos)
