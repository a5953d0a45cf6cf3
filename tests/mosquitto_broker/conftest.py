"""Mosquitto (dynamic security) as chatmq's broker: the real sync, bridge, API, SQLite and Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chatmq.adapters.mosquitto.control import DynsecClient
from chatmq.adapters.mosquitto.passwords import push_password
from chatmq.adapters.mosquitto.sync import MosquittoSync
from chatmq.bridge.service import Bridge
from chatmq.core.auth import hash_password
from chatmq.core.config import Settings
from chatmq.core.store import Store, open_store
from tests.access_cases import PASSWORD, USERS, seed
from tests.mosquitto_broker.dynsec import DynsecMosquitto
from tests.stack import RawClient


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[DynsecMosquitto]:
    broker = DynsecMosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def settings(data_dir: Path, mosquitto: DynsecMosquitto, redis_url: str) -> Settings:
    return Settings(
        data_dir=data_dir, broker_host=mosquitto.host, broker_port=mosquitto.port, redis_url=redis_url,
        secret_key="mosquitto-test-secret-0123456789abcdef", membership_refresh_s=0.1,
        service_password="bridge-pw-0123456789", mosquitto_url=mosquitto.admin_url,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.resolved_store_url)
    seed(store, hash_password(PASSWORD))
    yield store
    store.close()


@pytest.fixture
def sync(settings: Settings, store: Store) -> Iterator[MosquittoSync]:
    """The sync, fully synced, then polling every 0.1 s in a thread; device passwords pushed as
    ``chatmq user add`` would."""
    assert settings.mosquitto_url and settings.service_password
    client = DynsecClient(settings.mosquitto_url)
    client.connect()
    syncer = MosquittoSync(store, client, settings.service_password, interval_s=0.1)
    assert syncer.full_sync() > 0
    for user in USERS:
        push_password(settings.mosquitto_url, user, PASSWORD)
    stop = threading.Event()
    thread = threading.Thread(target=syncer.run, args=(stop,), daemon=True)
    thread.start()
    yield syncer
    stop.set()
    thread.join(5)
    client.close()


@pytest.fixture
def bridge(settings: Settings, store: Store, redis_client: redis.Redis, sync: MosquittoSync) -> Iterator[Bridge]:
    bridge = Bridge(settings, store, redis_client)
    bridge.start()
    assert bridge.wait_connected(10), "the bridge could not log in to Mosquitto"
    yield bridge
    bridge.stop()


@pytest.fixture
def connect(mosquitto: DynsecMosquitto) -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def make(user: str, password: str = PASSWORD, **kwargs: object) -> RawClient:
        client = RawClient(mosquitto.port, user, password, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
