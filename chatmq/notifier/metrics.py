"""The notifier's ``/metrics``, ``/healthz`` and ``/readyz`` (chatmq.core.opsserver, as the broker and
bridge have them) on ``CHATMQ_NOTIFIER_METRICS_PORT``."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from chatmq.core.opsserver import OpsServer, ping_check
from chatmq.notifier.sender import Outcome
from chatmq.notifier.service import Notifier

ATTEMPTS = Counter("chatmq_notifier_attempts_total", "HTTP attempts by channel (push, webhook) and outcome "
                   "(delivered, pending = retry, dead, cancelled)", ["channel", "outcome"])  # fmt: skip
ATTEMPT_SECONDS = Histogram("chatmq_notifier_attempt_seconds", "one attempt, HTTP included", ["channel"])
ACTIVE = Gauge("chatmq_notifier_active", "1 while this notifier holds the lease (0: standby)")
IN_FLIGHT = Gauge("chatmq_notifier_in_flight", "attempts on the wire now")


def instrument(notifier: Notifier) -> None:
    def after(delivery: Any, outcome: Outcome, seconds: float) -> None:
        ATTEMPTS.labels(delivery.channel, outcome.state).inc()
        ATTEMPT_SECONDS.labels(delivery.channel).observe(seconds)

    notifier.sender.after_attempt = after
    ACTIVE.set_function(lambda: 1.0 if notifier.active.is_set() else 0.0)
    IN_FLIGHT.set_function(lambda: float(notifier.sender.in_flight))


def start_ops_server(notifier: Notifier, host: str, port: int, store: Any, redis_client: Any) -> OpsServer | None:
    """Ready when the store and Redis answer: a standby (no lease) is ready too, it is doing its job;
    ``chatmq_notifier_active`` tells which one sends."""
    if not port:
        return None
    checks = {"store": ping_check(store), "redis": ping_check(redis_client)}
    return OpsServer(host, port, checks).start()
