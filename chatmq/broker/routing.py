"""Routing: who gets a message, checked per recipient, handed to its outbox or offline queue.

Why: stock amqtt 0.12.1 matches every message against every filter (10,000 idle filters took relay
from ~6,000 to ~250 msg/s), spawns one task per delivery and one per plugin call, and iterates
its subscriptions dict across awaits, so a SUBSCRIBE during a broadcast can raise "dictionary
changed size during iteration". Here:

- ``SubscriptionIndex`` (a ``TopicTrie`` of filter -> {client_id: (session, qos)}) finds the
  recipients of a topic in O(depth + matches). amqtt's subscriptions dict becomes a read-only
  ``SubscriptionsView`` over it (amqtt's ``BrokerContext.subscriptions`` reads it; its iteration
  is a snapshot, so awaiting inside a loop over it is safe).
- ``Router.route`` runs in the caller's task (the publisher's reader): when it returns, every
  matching subscriber has the message in its outbox or offline queue, so a PUBACK sent afterwards
  promises delivery, and per-publisher order is the order the reader saw.
- Overlapping subscriptions of one client deliver ONCE, at the highest granted QoS among that
  client's matching filters (MQTT 3.1.1 section 3.3.5 allows one copy per client or one per
  matching filter; a chat device wants each message once), and at min(publish QoS, granted QoS)
  [MQTT-3.8.4-6] (stock amqtt upgraded QoS 0 publishes to the subscription's QoS).
- A repeated SUBSCRIBE to the same filter replaces its QoS [MQTT-3.8.4-3] (stock kept the old one).
- The RECEIVE check runs per recipient per message (the access rules rely on it to cut removed
  members): a direct call of the broker's hooks (``Router.allowed``), not a task per plugin.
- Retained messages (``RetainedMessages``) go to a new subscription after the RECEIVE check, through
  the session's outbox, so their order with routed messages is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from amqtt.session import Session

from chatmq.broker.topictrie import TopicTrie, filter_matches, has_wildcard, valid_filter
from chatmq.core.access import Action
from chatmq.core.mqtt.codec import SUBACK_FAILURE

if TYPE_CHECKING:
    from chatmq.broker.deliveries import Deliveries
    from chatmq.broker.hooks import Hooks
    from chatmq.broker.offline import OfflineQueues
    from chatmq.broker.ops import Counters

log = logging.getLogger(__name__)

Subscribers = dict[str, tuple[Session, int]]  # client_id -> (session, granted qos)


class SubscriptionIndex:
    """Filters and their subscribers, indexed for routing and for per-client removal."""

    def __init__(self) -> None:
        self._trie: TopicTrie[Subscribers] = TopicTrie()
        self._by_client: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._trie)

    def add(self, topic_filter: str, session: Session, qos: int) -> None:
        subscribers = self._trie.get(topic_filter)
        if subscribers is None:
            subscribers = {}
            self._trie.insert(topic_filter, subscribers)
        client_id = session.client_id or ""
        subscribers[client_id] = (session, qos)
        self._by_client.setdefault(client_id, set()).add(topic_filter)

    def remove(self, topic_filter: str, client_id: str) -> bool:
        subscribers = self._trie.get(topic_filter)
        if subscribers is None or subscribers.pop(client_id, None) is None:
            return False
        if not subscribers:
            self._trie.remove(topic_filter)
        own = self._by_client.get(client_id)
        if own is not None:
            own.discard(topic_filter)
            if not own:
                del self._by_client[client_id]
        return True

    def remove_client(self, client_id: str) -> list[str]:
        """Every filter of one client, in O(its own filters)."""
        filters = list(self._by_client.get(client_id, ()))
        for topic_filter in filters:
            self.remove(topic_filter, client_id)
        return filters

    def filters_of(self, client_id: str) -> set[str]:
        return set(self._by_client.get(client_id, ()))

    def subscribers(self, topic_filter: str) -> Subscribers | None:
        return self._trie.get(topic_filter)

    def filters(self) -> list[str]:
        return self._trie.filters()

    def clear(self) -> None:
        self._trie.clear()
        self._by_client.clear()

    def route(self, topic: str) -> list[tuple[Session, int]]:
        """One (session, qos) per client subscribed to a matching filter, at its highest granted QoS.

        A new list: the caller may await per recipient while subscriptions change.
        """
        matched = self._trie.match(topic)
        first = next(matched, None)
        if first is None:
            return []
        second = next(matched, None)
        if second is None:  # the common case: one filter matches, no merging needed
            return list(first.values())
        best: dict[str, tuple[Session, int]] = dict(first)
        for subscribers in (second, *matched):
            for client_id, entry in subscribers.items():
                known = best.get(client_id)
                if known is None or entry[1] > known[1]:
                    best[client_id] = entry
        return list(best.values())


class SubscriptionsView(Mapping[str, list[tuple[Session, int]]]):
    """amqtt's ``dict[filter, list[(session, qos)]]`` shape, read-only, over the index.

    Iteration walks a snapshot of the filters, so code that awaits inside ``for f in
    broker.subscriptions`` (stock ``_handle_client_session`` does) cannot crash when a client
    subscribes meanwhile. ``clear()`` exists because ``Broker.start()`` calls it.
    """

    def __init__(self, index: SubscriptionIndex) -> None:
        self._index = index

    def __getitem__(self, topic_filter: str) -> list[tuple[Session, int]]:
        subscribers = self._index.subscribers(topic_filter)
        if subscribers is None:
            raise KeyError(topic_filter)
        return list(subscribers.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.filters())

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"SubscriptionsView({len(self)} filters)"

    def clear(self) -> None:
        self._index.clear()


class RetainedMessages:
    """The last retained message of each topic [MQTT-3.3.1-5]; an empty one deletes it [MQTT-3.3.1-10]."""

    def __init__(self) -> None:
        self._messages: dict[str, tuple[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def set(self, topic: str, data: bytes | bytearray, qos: int) -> None:
        if data:
            self._messages[topic] = (bytes(data), qos)
        else:
            self._messages.pop(topic, None)

    def matching(self, topic_filter: str) -> list[tuple[str, bytes, int]]:
        """(topic, data, qos) of every retained message the filter matches."""
        if not has_wildcard(topic_filter):
            found = self._messages.get(topic_filter)
            return [] if found is None else [(topic_filter, *found)]
        return [(topic, *message) for topic, message in list(self._messages.items())
                if filter_matches(topic, topic_filter)]  # fmt: skip

    def clear(self) -> None:
        self._messages.clear()


class Router:
    """Subscriptions and routing (see the module docstring): the index, the hooks' SUBSCRIBE and
    RECEIVE checks, and each delivery handed to ``deliveries`` (connected) or ``offline`` (a
    persistent session without a connection)."""

    def __init__(self, hooks: Hooks, counters: Counters, deliveries: Deliveries, offline: OfflineQueues) -> None:
        self.hooks = hooks
        self.counters = counters
        self.deliveries = deliveries
        self.offline = offline
        self.index = SubscriptionIndex()
        self.retained = RetainedMessages()
        self.max_qos: int | None = None  # the broker configuration's "max-qos"

    async def allowed(self, session: Session, access: Action, topic: str) -> bool:
        """The hooks decide (chatmq/broker/hooks: chatmq.core.access.authorize); a hook that fails denies."""
        try:
            allowed = await self.hooks.acl_check(session, access, topic)
        except Exception:
            log.exception("access check failed; %s on %r denied", access.value, topic)
            allowed = False
        if not allowed:
            self.counters.denied(access)
        return allowed

    # ---- subscriptions -------------------------------------------------------------------

    async def subscribe(self, session: Session, topic_filter: str, qos: int) -> int:
        """The granted QoS, or SUBACK_FAILURE (an invalid filter, or the SUBSCRIBE check refused it)."""
        if not valid_filter(topic_filter) or not await self.allowed(session, Action.SUBSCRIBE, topic_filter):
            return SUBACK_FAILURE
        if self.max_qos is not None:
            qos = min(qos, self.max_qos)
        self.index.add(topic_filter, session, qos)
        return qos

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        return self.index.remove(topic_filter, session.client_id or "")

    def subscribed(self, session: Session, topic_filter: str) -> bool:
        return (session.client_id or "") in (self.index.subscribers(topic_filter) or {})

    def remove_client(self, session: Session) -> None:
        self.index.remove_client(session.client_id or "")

    async def send_retained(self, session: Session, topic_filter: str, qos: int) -> None:
        """The retained messages of one new subscription, after the RECEIVE check, in the session's outbox."""
        for topic, data, retained_qos in self.retained.matching(topic_filter):
            if await self.allowed(session, Action.RECEIVE, topic):
                self.deliveries.enqueue(session, topic, data, min(qos, retained_qos), retain=True)

    # ---- routing -------------------------------------------------------------------------

    async def route(self, topic: str, data: bytes | bytearray, qos: int | None) -> bool:
        """Every allowed subscriber gets the message, at min(``qos``, granted QoS) (the granted QoS when
        ``qos`` is None). False when a subscriber that must not drop refused it (or routing failed):
        the publisher then gets no PUBACK and resends."""
        try:
            taken = True
            for session, granted in self.index.route(topic):
                if not await self.allowed(session, Action.RECEIVE, topic):
                    log.info("%s not allowed to receive messages from topic %s", session.client_id, topic)
                    continue
                delivery_qos = granted if qos is None else min(qos, granted)
                taken = await self._deliver(session, topic, data, delivery_qos) and taken
            return taken
        except Exception:
            log.exception("routing failed for topic %r", topic)
            return False

    async def _deliver(self, session: Session, topic: str, data: bytes | bytearray, qos: int) -> bool:
        """False when the session refused the message (a full queue that must not drop)."""
        if session.transitions.state == "connected":
            self.counters.totals.delivered += 1
            self.deliveries.enqueue(session, topic, data, qos)
            return True
        # [MQTT 3.1.2.4]: QoS>0 is queued for a persistent, non-anonymous session
        if qos and not session.clean_session:
            self.counters.totals.queued += 1
            if not session.is_anonymous:
                return await self.offline.put(session, topic, data, qos)
        return True
