"""The operator's counters: plain running totals for the admin channel's ``stats`` (rates are computed
from samples) and the Prometheus series of chatmq/broker/metrics.py.

Counting happens inline: an integer add per event, no task, no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chatmq.broker import metrics
from chatmq.core.access import Action


@dataclass
class Totals:
    received: int = 0
    delivered: int = 0
    queued: int = 0
    rejected: int = 0
    connections: int = 0


_DENIAL_REASONS = {Action.PUBLISH: "publish_denied", Action.SUBSCRIBE: "subscribe_denied",
                   Action.RECEIVE: "receive_denied"}  # fmt: skip


class Counters:
    def __init__(self) -> None:
        self.totals = Totals()
        self.started_at = time.time()

    def rejected(self, reason: str) -> None:
        """A publish or delivery refused."""
        self.totals.rejected += 1
        metrics.REJECTED.labels(reason=reason).inc()

    def denied(self, access: Action) -> None:
        reason = _DENIAL_REASONS.get(access)
        if reason is not None:
            self.rejected(reason)

    def connected(self) -> None:
        self.totals.connections += 1
        metrics.CONNECTIONS.inc()

    def login_refused(self) -> None:
        metrics.LOGINS_REFUSED.inc()
