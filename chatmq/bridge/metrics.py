"""The bridge's Prometheus series and its metrics and health port (Settings.bridge_metrics_port).

Instrumentation uses the workers' hooks (``after_batch``, ``on_update``, ``depth``) and a timed
store handed to the bridge, so the message path itself carries no metrics code: one histogram
observation per batch or message, on the thread that already runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from chatmq.core.opsserver import OK, OpsServer, ping_check

if TYPE_CHECKING:
    from chatmq.bridge.service import Bridge

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ACK_LATENCY = Histogram("chatmq_bridge_ack_latency_seconds",
                        "from a send reaching the bridge to its ack being published", buckets=_LATENCY_BUCKETS)
STORE_WRITE = Histogram("chatmq_bridge_store_write_seconds", "one store append (a batch of sends)",
                        buckets=_LATENCY_BUCKETS)
SENDS = Counter("chatmq_bridge_sends", "sends settled by the writer (stored, duplicate or rejected)")
PRESENCE = Counter("chatmq_bridge_presence_updates", "device presence updates applied", ["status"])
QUEUE_DEPTH = Gauge("chatmq_bridge_queue_depth", "inbound items waiting for a worker thread", ["queue"])
CONNECTED = Gauge("chatmq_bridge_connected", "1 while connected and subscribed to the broker")
PARTITIONS = Gauge("chatmq_bridge_partitions_owned", "partition leases this worker holds (workers only)")
HELD = Gauge("chatmq_bridge_held_messages", "sends held for partitions being taken over (workers only)")
for _status in ("online", "offline"):
    PRESENCE.labels(status=_status)


class TimedStore:
    """The store, with ``append`` timed; everything else passes straight through."""

    def __init__(self, store: Any) -> None:
        self._inner = store

    def append(self, batch: Any, **options: Any) -> Any:
        with STORE_WRITE.time():
            return self._inner.append(batch, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def instrument(bridge: Bridge) -> None:
    def settled(batch: list[Any]) -> None:
        now = time.time()
        SENDS.inc(len(batch))
        for item in batch:  # message.ts is when the bridge received the send
            ACK_LATENCY.observe(max(0.0, now - item.message.ts / 1000))

    bridge._writer.after_batch = settled
    bridge._presence.on_update = lambda online: PRESENCE.labels(status="online" if online else "offline").inc()
    for name in ("writer", "receipts", "presence", "history"):
        worker = getattr(bridge, f"_{name}")
        QUEUE_DEPTH.labels(queue=name).set_function(lambda worker=worker: worker.depth)
    CONNECTED.set_function(lambda: 1.0 if bridge.connected else 0.0)
    gate = bridge.partitions
    if gate is not None:
        PARTITIONS.set_function(lambda: float(gate.owned))
        HELD.set_function(lambda: float(gate.held))


def start_ops_server(bridge: Bridge, host: str, port: int, store: Any, redis_client: Any) -> OpsServer | None:
    if not port:
        return None

    def check_broker() -> str:
        return OK if bridge.connected else "down: not connected and subscribed to the broker"

    checks = {"store": ping_check(store), "redis": ping_check(redis_client), "broker": check_broker}
    return OpsServer(host, port, checks).start()
