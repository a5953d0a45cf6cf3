"""What one account may make a broker hold: at most ``CHATMQ_SESSIONS_PER_USER`` sessions (live
connections plus persistent sessions kept offline). A new client id beyond it is refused with
CONNACK 5 and a log line; a client id the broker already holds for that user always comes back
(reconnect, take-over, resume); other users are not affected. Before, one user could open any
number of client ids, each with its own bounded queue, multiplying that bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.core.store import open_store
from tests.broker.conftest import BrokerProcess, seed, start_broker
from tests.broker.mqtt import NOT_AUTHORIZED, Mqtt

pytestmark = pytest.mark.timeout(60)

LIMIT = 3


@pytest.fixture
def broker(tmp_path: Path, redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerProcess]:
    url = "sqlite:///" + str(tmp_path / "chatmq.db")
    store = open_store(url)
    try:
        seed(store)
    finally:
        store.close()
    monkeypatch.setenv("CHATMQ_SESSIONS_PER_USER", str(LIMIT))
    running = start_broker(tmp_path, url, redis_server.url)
    yield running
    running.stop()


def test_a_user_holds_at_most_sessions_per_user_sessions(broker: BrokerProcess) -> None:
    alice, bob = broker.token("alice"), broker.token("bob")
    ids = f"limits-{time.monotonic_ns()}"
    opened: list[Mqtt] = []

    def connect(user: str, token: str, client_id: str, *, clean: bool = True) -> int:
        client = Mqtt(broker.port, user, token, client_id=client_id, clean_session=clean)
        code = client.connect()
        if code == 0:
            opened.append(client)
        return code

    try:
        assert connect("alice", alice, f"{ids}-a0") == 0
        assert connect("alice", alice, f"{ids}-a1") == 0
        assert connect("alice", alice, f"{ids}-kept", clean=False) == 0
        opened.pop().stop()  # offline now, but the broker keeps the persistent session: it still counts

        assert connect("alice", alice, f"{ids}-a2") == NOT_AUTHORIZED
        deadline = time.monotonic() + 5
        while f"refused client_id='{ids}-a2' user='alice'" not in broker.log():
            assert time.monotonic() < deadline, broker.log()[-2000:]
            time.sleep(0.05)
        assert f"{LIMIT} sessions held already (CHATMQ_SESSIONS_PER_USER)" in broker.log()

        assert connect("bob", bob, f"{ids}-b0") == 0  # per user
        assert connect("alice", alice, f"{ids}-kept", clean=False) == 0  # its own session resumes
        assert connect("alice", alice, f"{ids}-a0") == 0  # a take-over of a live one is no new session

        opened[1].stop()  # a clean session that ends frees its place
        time.sleep(0.3)
        assert connect("alice", alice, f"{ids}-a3") == 0
        assert connect("alice", alice, f"{ids}-a4") == NOT_AUTHORIZED
    finally:
        for client in opened:
            client.stop()
        # the persistent session is kept in the shared Redis: end it, so later brokers do not restore it
        connect("alice", alice, f"{ids}-kept")
        for client in opened:
            client.stop()
