"""Offline queues: what a persistent session (clean_session=0, not anonymous) is owed while it has
no connection, bounded, and kept in Redis (chatmq/broker/session_store.py) so a restart keeps it.

A session's queue is amqtt's ``session.retained_messages`` (a ``SmallQueue`` of ``QueuedMessage``).
Messages are queued at min(publish, granted) QoS, QoS 0 not at all (amqtt 0.12 queued at the
granted QoS, QoS 0 upgraded, without a bound). A device session keeps at most
``session_queue_limit`` messages and ``session_queue_bytes`` (beyond, new messages are dropped: the
history API has them). The bridge's session (the service identity) is only bounded by
``service_queue_bytes``, and a message that does not fit is refused: its publisher gets no PUBACK
instead of a promise the broker cannot keep.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from amqtt.session import Session

from chatmq.broker.services import session_identity
from chatmq.broker.session_store import QueuedMessage, SessionStore, StoredSession

if TYPE_CHECKING:
    from chatmq.broker.chatbroker import BrokerLimits

log = logging.getLogger(__name__)

_QUEUED_BYTES_KEY = "chatmq.queued_bytes"  # payload bytes in a session's offline queue
_OVERFLOW_KEY = "chatmq.queue_overflowing"


def queued_bytes(session: Session) -> int:
    return int(session.attributes.get(_QUEUED_BYTES_KEY, 0))


def _count_queued(session: Session, delta: int) -> None:
    session.attributes[_QUEUED_BYTES_KEY] = queued_bytes(session) + delta


def keep_offline(session: Session, topic: str, data: bytes | bytearray, qos: int) -> None:
    """Into the session's offline queue, with no bound and not stored (what a connection that went
    away still had in its outbox, or what the store gave back at start)."""
    session.retained_messages.put_nowait(QueuedMessage(topic, bytes(data), qos))  # type: ignore[arg-type]
    _count_queued(session, len(data))


def _is_service(session: Session) -> bool:
    identity = session_identity(session.attributes)
    return identity is not None and identity.is_service


class OfflineQueues:
    def __init__(self, limits: BrokerLimits, store: SessionStore | None) -> None:
        self.limits = limits
        self.store = store

    async def put(self, session: Session, topic: str, data: bytes | bytearray, qos: int) -> bool:
        """Queue one delivery for an offline persistent session; False when it must be refused."""
        if qos == 0:
            return True
        held = queued_bytes(session)
        service = _is_service(session)
        if service:
            full = held + len(data) > self.limits.service_queue_bytes
            limit = f"service_queue_bytes={self.limits.service_queue_bytes}: withholding PUBACKs from senders"
        else:
            full = (session.retained_messages.qsize() >= self.limits.session_queue_limit
                    or held + len(data) > self.limits.session_queue_bytes)  # fmt: skip
            limit = (f"session_queue_limit={self.limits.session_queue_limit}, session_queue_bytes="
                     f"{self.limits.session_queue_bytes}: dropping new messages")  # fmt: skip
        if full:
            if not session.attributes.get(_OVERFLOW_KEY):
                log.warning("offline queue of client_id=%r is full (%s) until it reconnects", session.client_id, limit)
            session.attributes[_OVERFLOW_KEY] = True
            return not service
        keep_offline(session, topic, data, qos)
        if self.store is not None and session.client_id:
            try:
                await self.store.enqueue(session.client_id, QueuedMessage(topic, bytes(data), qos))
            except Exception:
                log.exception("could not persist a queued message for client_id=%r", session.client_id)
        return True

    async def take(self, session: Session) -> list[QueuedMessage]:
        """Everything queued while the session was offline, oldest first, for ``Deliveries.replay``
        (amqtt 0.12 delivered them with retain=1, one task and ack wait each, and after live
        messages routed meanwhile)."""
        session.attributes.pop(_OVERFLOW_KEY, None)
        _count_queued(session, -queued_bytes(session))
        queue = session.retained_messages
        queued: list[QueuedMessage] = [queue.get_nowait() for _ in range(queue.qsize())]  # type: ignore[misc]
        if self.store is not None and session.client_id and not session.clean_session:
            # what is not acknowledged yet is in flight from here on; shutdown writes it back
            with contextlib.suppress(Exception):
                await self.store.replace_queue(session.client_id, [])
        return queued

    def restore(self, session: Session, stored: StoredSession) -> None:
        """A stored queue back into a restored session: everything the bridge has not stored yet,
        a device's newest ``session_queue_limit``."""
        keep = stored.queue if _is_service(session) else stored.queue[-self.limits.session_queue_limit :]
        for message in keep:
            keep_offline(session, message.topic, message.data, message.qos)

    async def persist(self, session: Session, owed: list[QueuedMessage]) -> None:
        """At shutdown: what the session is owed (in flight, in its outbox, then its queue), in order."""
        if self.store is None or not session.client_id:
            return
        queue = session.retained_messages
        owed = owed + [queue.get_nowait() for _ in range(queue.qsize())]  # type: ignore[misc]
        try:
            await self.store.replace_queue(session.client_id, owed)
        except Exception:
            log.exception("could not persist the queue of client_id=%r at shutdown", session.client_id)
