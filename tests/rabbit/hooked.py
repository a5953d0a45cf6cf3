"""A private RabbitMQ node whose logins and access checks are answered by chatmq's API, served here.

The node is configured with chatmq's own part of ``rabbitmq.conf`` (chatmq.adapters.rabbitmq.config:
the HTTP auth backend's URLs with the hook secret, the MQTT plugin's settings), the API runs in a
thread on a free loopback port with a real HTTP server, and the store is the test's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import make_server

from chatmq.adapters.rabbitmq.config import auth_lines, mqtt_lines
from chatmq.api.app import create_app
from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.store import Store, open_store
from tests.rabbitmq import RabbitCluster, RabbitNode

HOOK_SECRET = "rabbitmq-hook-secret-0123456789"


@dataclass
class HookedRabbit:
    settings: Settings
    store: Store
    cluster: RabbitCluster
    api_url: str

    @property
    def node(self) -> RabbitNode:
        return self.cluster.nodes[0]

    def service_login(self) -> tuple[str, str]:
        return SERVICE_USER, issue_token(self.settings.load_secret(), SERVICE_USER, 3600, service=True).token


@contextmanager
def hooked_rabbit(data_dir: Path, redis_url: str, seed: Callable[[Store], None], *, size: int = 1,
                  **settings: object) -> Iterator[HookedRabbit]:  # fmt: skip
    config = Settings(data_dir=data_dir, secret_key="rabbit-secret-0123456789abcdef0123456", redis_url=redis_url,
                      rabbitmq_hook_secret=HOOK_SECRET, **settings)  # type: ignore[arg-type]
    store = open_store(config.resolved_store_url)
    seed(store)
    server = make_server("127.0.0.1", 0, create_app(config, store=store), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="chatmq-api", daemon=True)
    thread.start()
    api_url = f"http://127.0.0.1:{server.server_port}"
    try:
        extra = "\n".join([*auth_lines(config, api_url), *mqtt_lines(config)]) + "\n"
        with RabbitCluster(size=size, extra_config=extra) as cluster:
            yield HookedRabbit(config, store, cluster, api_url)
    finally:
        server.shutdown()
        thread.join(5)
        store.close()
