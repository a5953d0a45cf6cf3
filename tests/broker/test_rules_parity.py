"""chatmq's own broker, live, answers every access case (tests/access_cases.py) as the rule table
says: subscriptions by SUBACK, publishes by what a service subscriber sees, deliveries, and wills
by whether the CONNECT is accepted. The admin channel's cases are in tests/ops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.core.access import Action
from chatmq.core.auth import hash_password
from chatmq.core.config import SERVICE_USER
from chatmq.core.store import open_store
from tests.access_cases import PASSWORD, device_cases, live_verdicts, seed
from tests.broker.conftest import BrokerProcess, start_broker
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def world_broker(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("parity")
    url = "sqlite:///" + str(data_dir / "chatmq.db")
    store = open_store(url)
    seed(store, hash_password(PASSWORD))
    store.close()
    running = start_broker(data_dir, url, redis_server.url)
    yield running
    running.stop()


@pytest.mark.parametrize("action", list(Action), ids=lambda action: action.value)
def test_the_broker_answers_every_case(world_broker: BrokerProcess, action: Action) -> None:
    clients: list[RawClient] = []

    def connect(user: str, password: str = PASSWORD, **kwargs: object) -> RawClient:
        client = RawClient(world_broker.port, user, password, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    cases = device_cases(action)
    try:
        verdicts = live_verdicts(connect, (SERVICE_USER, world_broker.token(SERVICE_USER, service=True)), cases)
    finally:
        for client in clients:
            client.close()
    assert [case for case in cases if verdicts[case] is not case.allowed] == []
