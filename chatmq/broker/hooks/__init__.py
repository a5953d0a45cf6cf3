"""The broker's hooks: what it asks before it lets a client in, lets a packet through or answers a
control message, in the spirit of Mosquitto's plugin interface (mosquitto_plugin.h: basic auth,
ACL check per access kind, control, disconnect events, a version the broker checks).

The broker core calls a ``Hooks`` object directly (no registry, no dotted paths):

- ``authenticate(session)`` at CONNECT, before any existing session is touched; a True answer
  leaves the client's identity in ``session.attributes`` (``chatmq.broker.services.session_identity``);
- ``acl_check(session, access, topic)`` for every access kind of ``chatmq.core.access.Action``: WILL
  (at CONNECT, the will's topic), SUBSCRIBE (the filter, per SUBSCRIBE), PUBLISH (per client
  publish, before routing) and RECEIVE (per recipient per message);
- ``control(session, topic, payload)`` for a client publish on a ``$CONTROL/`` topic, before the
  broker's drop of client ``$`` publishes: ``Control.HANDLED`` (acknowledged, not routed),
  ``Control.REFUSED`` (the connection is closed, unacknowledged) or ``Control.NOT_MINE``;
- ``disconnected(session)`` when a connection ends;
- ``start(broker)`` / ``stop()`` around the broker's life; ``broker`` is a ``BrokerView``, all the
  broker state a hook may see or act on.

``ChatHooks`` is chatmq's one implementation: logins (``chatmq/broker/hooks/login.py``), access control
whose only decision-maker is ``chatmq.core.access.authorize`` (``chatmq/broker/hooks/access.py``) and the
admin channel (``chatmq/broker/hooks/admin.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from amqtt.session import Session

from chatmq.broker.hooks.access import AccessControl
from chatmq.broker.hooks.admin import Admin
from chatmq.broker.hooks.control import Control
from chatmq.broker.hooks.login import Logins
from chatmq.core.access import Action
from chatmq.core.control import MEMBERSHIP_TOPIC, REQUEST_TOPIC

if TYPE_CHECKING:
    from chatmq.broker.services import BrokerServices

HOOKS_VERSION = 1

__all__ = ["HOOKS_VERSION", "Action", "BrokerView", "ChatHooks", "Control", "Hooks", "Totals"]


class Totals(Protocol):
    received: int
    delivered: int
    queued: int
    rejected: int
    connections: int


@runtime_checkable
class BrokerView(Protocol):
    """What a hook may see of the broker and do to it."""

    started_at: float
    totals: Totals

    def connected(self) -> list[Session]:
        """The sessions with a live connection."""
        ...

    def kept_sessions(self) -> list[Session]:
        """Every session kept, connected or persistent and offline."""
        ...

    def session(self, client_id: str) -> Session | None: ...

    def filter_count(self) -> int: ...

    async def disconnect(self, session: Session) -> None:
        """Close the session's connection, as an abnormal end (its will is published)."""
        ...

    def reply(self, session: Session, topic: str, data: bytes) -> None:
        """A QoS 1 message to this connection only, in order with its other deliveries."""
        ...


class Hooks(Protocol):
    version: ClassVar[int]

    async def start(self, broker: BrokerView) -> None: ...

    async def stop(self) -> None: ...

    async def authenticate(self, session: Session) -> bool: ...

    async def acl_check(self, session: Session, access: Action, topic: str) -> bool: ...

    async def control(self, session: Session, topic: str, payload: bytes) -> Control: ...

    async def disconnected(self, session: Session) -> None: ...


class ChatHooks:
    """chatmq's hooks: ``Logins`` + ``AccessControl`` (chatmq.core.access.authorize) + ``Admin``."""

    version: ClassVar[int] = HOOKS_VERSION

    def __init__(self, services: BrokerServices, redis_url: str | None = None) -> None:
        self.logins = Logins(services)
        self.access = AccessControl(services)
        self.admin = Admin(services, redis_url)

    async def start(self, broker: BrokerView) -> None:
        await self.admin.start(broker)

    async def stop(self) -> None:
        await self.admin.stop()
        self.logins.close()

    async def authenticate(self, session: Session) -> bool:
        return await self.logins.authenticate(session)

    async def acl_check(self, session: Session, access: Action, topic: str) -> bool:
        return await self.access.check(session, access, topic)

    async def control(self, session: Session, topic: str, payload: bytes) -> Control:
        if topic == REQUEST_TOPIC:
            await self.admin.handle(session, payload)
            return Control.HANDLED
        if topic == MEMBERSHIP_TOPIC:
            return await self.access.follow_fence(session, payload)
        return Control.NOT_MINE

    async def disconnected(self, session: Session) -> None:
        """Nothing yet: presence comes from the device's will and the bridge's heartbeats."""
