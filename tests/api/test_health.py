"""GET /readyz: 200 only when store, Redis, broker and a bridge are all alive; 503 says why."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatmq.core.liveness import BRIDGE_ALIVE_KEY
from chatmq.core.netutil import free_port
from chatmq.core.store import Store
from tests.mosquitto import LocalMosquitto

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def listening_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real MQTT broker (a private Mosquitto): the check needs a CONNACK, not just an open port."""
    broker = LocalMosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker.port
    broker.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP (the kernel completes the handshake) but never speaks MQTT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_an_open_port_that_does_not_speak_mqtt_is_not_a_broker(
    make_app: Callable[..., Flask], silent_port: int, redis_client: redis.Redis
) -> None:
    redis_client.set(BRIDGE_ALIVE_KEY, "1", px=60_000)
    response = make_app(broker_port=silent_port).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["broker"].startswith("unreachable")


def test_healthy_when_everything_answers(
    make_app: Callable[..., Flask], listening_port: int, redis_client: redis.Redis
) -> None:
    redis_client.set(BRIDGE_ALIVE_KEY, "1", px=60_000)
    response = make_app(broker_port=listening_port).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "checks": {"store": "ok", "redis": "ok", "broker": "ok", "bridge": "ok"},
    }


def test_503_names_closed_broker_and_missing_bridge(make_app: Callable[..., Flask]) -> None:
    port = free_port()
    response = make_app(broker_port=port).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    checks = body["checks"]
    assert checks["store"] == "ok" and checks["redis"] == "ok"
    assert checks["broker"].startswith("unreachable") and f"127.0.0.1:{port}" in checks["broker"]
    assert checks["bridge"].startswith("down") and BRIDGE_ALIVE_KEY in checks["bridge"]


def test_503_when_only_the_bridge_is_missing(make_app: Callable[..., Flask], listening_port: int) -> None:
    response = make_app(broker_port=listening_port).test_client().get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["broker"] == "ok" and checks["bridge"] != "ok"


def test_503_when_redis_and_store_are_down(
    settings, store: Store, listening_port: int  # type: ignore[no-untyped-def]
) -> None:
    from chatmq.api import create_app

    dead_redis = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store.close()
    app = create_app(settings.model_copy(update={"broker_port": listening_port}), store=store, redis_client=dead_redis)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["store"].startswith("unreachable")
    assert checks["redis"].startswith("unreachable")
    assert checks["bridge"].startswith("unknown")
    assert checks["broker"] == "ok"


def test_healthz_is_liveness_only(make_app: Callable[..., Flask]) -> None:
    """/healthz answers as long as the process does, even with every dependency down."""
    response = make_app(broker_port=free_port()).test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
