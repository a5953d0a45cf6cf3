"""Publishes conversation changes on ``user/{user}/events`` from the store's event outbox.

Why an outbox in the store rather than the API publishing over MQTT itself: the change and its
event are written together (one SQLite transaction), so an event is never lost between "member
removed" and "member told", the admin CLI produces the same events as the API without a broker
connection of its own, and the API stays a plain HTTP service with no MQTT session per worker.
The bridge already holds the server's MQTT session: it polls the outbox on the membership
refresh tick, publishes each event at QoS 1, and deletes it once the broker confirmed the publish.
"""

from __future__ import annotations

import logging
from typing import Any

from chatmq.bridge.outbox import Outbox
from chatmq.core.protocol import QOS_EVENTS, EventKind, conversation_event, events_topic
from chatmq.core.store.base import (
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    ConversationEvent,
    Store,
)

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 10.0


class EventPublisher:
    def __init__(self, store: Store, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox

    def publish_pending(self) -> int:
        """Publish what the outbox holds; returns how many events went out. Blocking."""
        events = self._store.pending_events()
        if not events:
            return 0
        for event in events:
            for user in event.recipients:
                self._outbox.publish(events_topic(user), payload_for(event, user), qos=QOS_EVENTS)
        if not self._outbox.wait_confirmed(self._outbox.mark(), FLUSH_TIMEOUT_S):
            log.warning("broker did not confirm %d events yet; they will be published again", len(events))
            return 0
        self._store.delete_events([event.id for event in events])
        return len(events)


def payload_for(event: ConversationEvent, user: str) -> dict[str, Any]:
    """What ``user`` is told: added/removed when it is about them, else that the conversation changed."""
    if event.kind == EVENT_CREATED or (event.kind == EVENT_MEMBER_ADDED and event.subject == user):
        return conversation_event(EventKind.CONVERSATION_ADDED, event.conv, event.ts, title=event.title)
    if event.kind == EVENT_MEMBER_REMOVED and event.subject == user:
        return conversation_event(EventKind.CONVERSATION_REMOVED, event.conv, event.ts)
    fields: dict[str, Any] = {"change": event.kind, "title": event.title}
    if event.subject is not None:
        fields["user"] = event.subject
    return conversation_event(EventKind.CONVERSATION_UPDATED, event.conv, event.ts, **fields)
