"""The broker's metrics and health port (Settings.broker_metrics_port; 0 = off).

``/readyz`` is ready when the store and Redis answer and the MQTT listener accepts connections:
what a compose healthcheck or a load balancer needs before sending devices here.
"""

from __future__ import annotations

import logging
import socket

from broker import metrics  # noqa: F401 - registers the broker's series before the first scrape
from chatcore import redisconn
from chatcore.config import Settings
from chatcore.opsserver import OK, OpsServer
from chatcore.store import Store

log = logging.getLogger(__name__)


def start_ops_server(settings: Settings, store: Store) -> OpsServer | None:
    if not settings.broker_metrics_port:
        return None
    redis_client = redisconn.connect(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
    probe_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host

    def check_store() -> str:
        store.ping()
        return OK

    def check_redis() -> str:
        redis_client.ping()
        return OK

    def check_mqtt() -> str:
        socket.create_connection((probe_host, settings.mqtt_port), 1).close()
        return OK

    checks = {"store": check_store, "redis": check_redis, "mqtt": check_mqtt}
    return OpsServer(settings.host, settings.broker_metrics_port, checks).start()
