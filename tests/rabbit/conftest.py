"""Private RabbitMQ nodes for the tests in this package (tests/rabbitmq.py starts and stops them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.rabbitmq import RabbitCluster, RabbitNode, leftover_processes, unavailable_reason


def _require_rabbitmq() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"RabbitMQ cannot run here: {reason}")


@pytest.fixture(scope="module")
def rabbit_node() -> Iterator[RabbitNode]:
    """One private node (MQTT, Web MQTT, management, HTTP auth plugin enabled), per test module."""
    _require_rabbitmq()
    with RabbitCluster(size=1) as cluster:
        yield cluster.nodes[0]


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three private nodes joined into one cluster, per test module."""
    _require_rabbitmq()
    with RabbitCluster(size=3) as cluster:
        yield cluster


@pytest.fixture(scope="session", autouse=True)
def no_rabbitmq_left_behind() -> Iterator[None]:
    """After the session (passed or failed) no process of a private node may still run."""
    yield
    left = leftover_processes()
    assert not left, f"RabbitMQ processes outlived their tests: {left}"
