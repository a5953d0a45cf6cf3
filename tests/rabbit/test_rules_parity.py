"""A private RabbitMQ node, asking chatmq's API, answers the access cases (tests/access_cases.py)
live, through real MQTT clients: subscriptions, publishes, deliveries and wills.

One difference is RabbitMQ's: it checks a last will as a publish (when it sends it), so a device
may leave a will wherever it may publish, as on Mosquitto.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.core.access import Action
from chatmq.core.auth import hash_password
from tests.access_cases import PASSWORD, device_cases, live_verdicts, seed, will_checked_as_publish
from tests.rabbit.hooked import HookedRabbit, hooked_rabbit
from tests.stack import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: object) -> Iterator[HookedRabbit]:
    data_dir: Path = tmp_path_factory.mktemp("rabbit-parity")
    with hooked_rabbit(data_dir, redis_server.url, lambda store: seed(store, hash_password(PASSWORD)),  # type: ignore[attr-defined]
                       membership_refresh_s=0.0) as world:  # fmt: skip
        yield world


@pytest.mark.parametrize("action", list(Action), ids=lambda action: action.value)
def test_rabbitmq_answers_every_case(world: HookedRabbit, action: Action) -> None:
    clients: list[RawClient] = []

    def connect(user: str, password: str = PASSWORD, **kwargs: object) -> RawClient:
        client = RawClient(world.node.mqtt_port, user, password, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    cases = device_cases(action)
    try:
        verdicts = live_verdicts(connect, world.service_login(), cases, refusal_closes=True)
    finally:
        for client in clients:
            client.close()
    assert [case for case in cases if verdicts[case] is not will_checked_as_publish(case)] == []
