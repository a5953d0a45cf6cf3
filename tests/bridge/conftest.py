"""Bridge fixtures: a private Mosquitto per test, the real SQLite store, a private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatmq.bridge.service import Bridge
from chatmq.core.auth import hash_password
from chatmq.core.config import Settings
from chatmq.core.store import Store, open_store
from tests.bridge.devices import Device
from tests.mosquitto import LocalMosquitto

USERS = ("alice", "bob", "carol", "dave")
CONVERSATIONS = {"c1": ("alice", "bob", "carol"), "c2": ("alice", "bob", "carol"), "solo": ("dave",)}


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    broker = LocalMosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def settings(data_dir: Path, mosquitto: LocalMosquitto, redis_url: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        broker_host=mosquitto.host,
        broker_port=mosquitto.port,
        redis_url=redis_url,
        secret_key="bridge-test-secret-0123456789abcdef-xyz",
        membership_refresh_s=0.1,
    )


def seed(store: Store) -> None:
    digest = hash_password("pw")
    for user in USERS:
        store.create_user(user, digest)
    for conv, members in CONVERSATIONS.items():
        store.create_conversation(conv, members)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.resolved_store_url)
    seed(store)
    yield store
    store.close()


@pytest.fixture
def start_bridge(
    settings: Settings, store: Store, redis_client: redis.Redis
) -> Iterator[Callable[..., Bridge]]:
    """Start a bridge (more than one in turn, for restart tests); all are stopped at teardown."""
    started: list[Bridge] = []

    def start(**overrides: Any) -> Bridge:
        bridge = Bridge(
            overrides.pop("settings", settings),
            overrides.pop("store", store),
            overrides.pop("redis_client", redis_client),
            **overrides,
        )
        started.append(bridge)
        bridge.start()
        assert bridge.wait_connected(10), "bridge did not connect to mosquitto"
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


@pytest.fixture
def bridge(start_bridge: Callable[..., Bridge]) -> Bridge:
    return start_bridge()


@pytest.fixture
def device(mosquitto: LocalMosquitto) -> Iterator[Callable[..., Device]]:
    """Connect test devices: ``device("alice", ["user/alice/ack"])``."""
    devices: list[Device] = []

    def connect(name: str, subscriptions: list[str] | tuple[str, ...] = ()) -> Device:
        dev = Device(mosquitto.host, mosquitto.port, name, subscriptions)
        devices.append(dev)
        return dev

    yield connect
    for dev in devices:
        dev.close()
