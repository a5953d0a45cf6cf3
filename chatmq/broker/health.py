"""The broker's metrics and health port (Settings.broker_metrics_port; 0 = off).

``/readyz`` is ready when the store and Redis answer and the MQTT listener answers a handshake:
what a compose healthcheck or a load balancer needs before sending devices here.
"""

from __future__ import annotations

import logging
import os

from chatmq.broker import metrics  # noqa: F401 - registers the broker's series before the first scrape
from chatmq.core import redisconn
from chatmq.core.config import Settings
from chatmq.core.opsserver import OpsServer, mqtt_check, ping_check
from chatmq.core.store import Store

log = logging.getLogger(__name__)


def start_ops_server(settings: Settings, store: Store) -> OpsServer | None:
    if not settings.broker_metrics_port:
        return None
    redis_client = redisconn.connect(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
    probe_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    checks = {
        "store": ping_check(store),
        "redis": ping_check(redis_client),
        "mqtt": mqtt_check(probe_host, settings.mqtt_port, settings.load_secret(), f"chatmq-readyz-{os.getpid()}"),
    }
    return OpsServer(settings.host, settings.broker_metrics_port, checks).start()
