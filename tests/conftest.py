"""Shared fixtures: a private Redis per test session, free ports, and a real stack (`chatmq up`,
tests/stack.py) shared by each test module that asks for it."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chatmq.cli.localredis import LocalRedis
from tests.rediscluster import LocalRedisCluster
from tests.stack import Stack


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """A clean database on the private server for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def mongo_test_url() -> str | None:
    return os.environ.get("CHATMQ_TEST_MONGO_URL") or None


_names = itertools.count()

# Suites that take minutes: real browsers, the Mosquitto interoperability suite, RabbitMQ nodes and
# clusters. `make test` leaves them out (it runs after every change); `make test-slow` runs them, and
# CI (.ci/run) runs both.
SLOW_SUITES = ("web", "interop", "rabbit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        parts = Path(item.path).relative_to(here).parts
        if parts and parts[0] in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Stack]:
    """One real `chatmq up` (broker, bridge, API) shared by a test module, on free ports."""
    running = Stack(tmp_path_factory.mktemp("stack") / "data", redis_server.url).start()
    yield running
    code = running.stop()
    assert code == 0, f"chatmq up exited with {code} on SIGTERM:\n{running.log()}"


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names that never collide between tests, even across modules sharing one Redis."""
    n = next(_names)
    return lambda prefix: f"{prefix}{n}"


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real 3-master Redis Cluster on loopback, one per test module that asks for it."""
    running = LocalRedisCluster(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield running
    running.stop()
