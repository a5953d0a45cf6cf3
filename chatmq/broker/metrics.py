"""The broker's Prometheus series. Counters are bumped inline (an integer add under a lock, no
task or I/O per packet); gauges that describe live state are computed at scrape time from the
brokers alive in this process, so keeping them costs nothing between scrapes."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONNECTIONS = Counter("chatmq_broker_connections", "MQTT connections accepted (CONNACK 0 sent)")
LOGINS_REFUSED = Counter("chatmq_broker_logins_refused", "CONNECTs refused (bad credentials, will, client id)")
# Per-message counts (received, delivered, queued) are the brokers' plain ``totals``, read at scrape
# time below: a prometheus Counter takes a lock per increment, twice per relayed message.
REJECTED = Counter("chatmq_broker_messages_rejected", "publishes or deliveries refused", ["reason"])
KICKED = Counter("chatmq_broker_clients_kicked", "connections closed by the admin channel", ["reason"])
CONTROL_REQUESTS = Counter("chatmq_broker_control_requests", "admin channel requests", ["command", "outcome"])

# Every reason label exists from the start, so a dashboard sees 0 instead of "no data".
REJECT_REASONS = ("reserved_topic", "publish_denied", "subscribe_denied", "receive_denied",
                  "typing_invalid", "typing_rate_limited")
for _reason in REJECT_REASONS:
    REJECTED.labels(reason=_reason)


class _LiveState(Collector):
    """Connections and queued messages of every running broker in this process."""

    def __init__(self) -> None:
        self.brokers: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connected = sessions = queued = 0
        for broker in list(self.brokers):
            for session, _handler in list(broker.sessions.values()):
                sessions += 1
                queued += session.retained_messages.qsize()
                if session.transitions.is_connected():
                    connected += 1
        yield GaugeMetricFamily("chatmq_broker_connected_clients", "clients connected now", value=connected)
        yield GaugeMetricFamily("chatmq_broker_sessions", "sessions kept (connected or persistent)", value=sessions)
        yield GaugeMetricFamily("chatmq_broker_queued_messages", "messages waiting for offline sessions",
                                value=queued)
        brokers = [b for b in list(self.brokers) if hasattr(b, "totals")]
        for name, field, doc in _TOTALS:
            yield CounterMetricFamily(name, doc, value=sum(getattr(b.totals, field) for b in brokers))


_TOTALS = (
    ("chatmq_broker_messages_received", "received", "PUBLISH packets received from clients"),
    ("chatmq_broker_messages_delivered", "delivered", "deliveries to connected subscribers"),
    ("chatmq_broker_messages_queued", "queued", "deliveries queued for offline persistent sessions"),
)
LIVE = _LiveState()
REGISTRY.register(LIVE)


def track(broker: Any) -> None:
    LIVE.brokers.add(broker)
