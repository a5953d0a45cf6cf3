"""A real broker process (``python -m chatmq.broker``) on free ports over a real SQLite store.

One broker serves a whole test module; the tests that change memberships create their own
conversations so they never disturb the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.netutil import free_port
from chatmq.core.store import Store, open_store
from tests.broker.mqtt import Mqtt

REPO = Path(__file__).resolve().parents[2]
SECRET = "test-secret-key-for-the-broker-tests-0123456789"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
READY_LINE = "broker listening"


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    ws_port: int
    store_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, user: str, *, service: bool = False, ttl_s: int = 300) -> str:
        return issue_token(SECRET, user, ttl_s, service=service).token

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def seed(store: Store) -> None:
    """alice and bob share c1, bob and carol share c2; dave is disabled."""
    for user, password in PASSWORDS.items():
        store.create_user(user, hash_password(password))
    store.set_disabled("dave", True)
    store.create_conversation("c1", ["alice", "bob"])
    store.create_conversation("c2", ["bob", "carol"])


def start_broker(data_dir: Path, store_url: str, redis_url: str) -> BrokerProcess:
    host, port, ws_port = "127.0.0.1", free_port(), free_port()
    env = {
        **os.environ,
        "CHATMQ_DATA_DIR": str(data_dir),
        "CHATMQ_STORE_URL": store_url,
        "CHATMQ_REDIS_URL": redis_url,
        "CHATMQ_SECRET_KEY": SECRET,
        "CHATMQ_HOST": host,
        "CHATMQ_MQTT_PORT": str(port),
        "CHATMQ_WS_PORT": str(ws_port),
        "CHATMQ_LOG_LEVEL": "INFO",
    }
    log_path = data_dir / f"broker-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmq.broker"], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    broker = BrokerProcess(proc, host, port, ws_port, store_url, log_path)
    deadline = time.monotonic() + 20
    while READY_LINE not in broker.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"broker did not start:\n{broker.log()}")
        time.sleep(0.05)
    return broker


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("broker-store") / "chatmq.db"
    url = "sqlite:///" + str(path)
    store = open_store(url)
    try:
        seed(store)
    finally:
        store.close()
    return url


@pytest.fixture(scope="module")
def broker(
    store_url: str, redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    running = start_broker(tmp_path_factory.mktemp("broker"), store_url, redis_server.url)
    yield running
    running.stop()


@pytest.fixture
def admin_store(store_url: str) -> Iterator[Store]:
    """A second Store on the broker's database, as an admin process would hold."""
    store = open_store(store_url)
    yield store
    store.close()


class Clients:
    """Makes connected test clients and stops them all at teardown."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self._made: list[Mqtt] = []

    def make(self, username: str | None, password: str | None, **kwargs: object) -> Mqtt:
        kwargs.setdefault("host", self.broker.host)
        port = self.broker.ws_port if kwargs.get("transport") == "websockets" else self.broker.port
        client = Mqtt(port, username, password, **kwargs)  # type: ignore[arg-type]
        self._made.append(client)
        return client

    def user(self, name: str, **kwargs: object) -> Mqtt:
        """A connected device client logged in with its password."""
        client = self.make(name, PASSWORDS[name], **kwargs)
        assert client.connect() == 0
        return client

    def service(self, **kwargs: object) -> Mqtt:
        """A connected client with the bridge's service identity."""
        client = self.make(SERVICE_USER, self.broker.token(SERVICE_USER, service=True), **kwargs)
        assert client.connect() == 0
        return client

    def close(self) -> None:
        for client in self._made:
            client.stop()


@pytest.fixture
def clients(broker: BrokerProcess) -> Iterator[Clients]:
    made = Clients(broker)
    yield made
    made.close()


# In-process brokers (stock amqtt or ours) for the defect regression tests; imported last because
# that module reads the constants above.
from tests.broker.inproc import run_broker  # noqa: E402,F401
