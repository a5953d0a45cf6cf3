"""Listeners, start-up and shutdown of the broker process."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.broker.server import serve
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port
from chatmq.core.store import open_store
from tests.broker.conftest import PASSWORDS, SECRET, BrokerProcess, Clients, seed, start_broker
from tests.broker.mqtt import NOT_AUTHORIZED, Mqtt

pytestmark = pytest.mark.timeout(60)


def test_websocket_listener(clients: Clients) -> None:
    service = clients.service()
    assert service.subscribe("chat/+/send/+") == 1
    alice = clients.user("alice", transport="websockets")
    assert alice.subscribe("chat/c1/msg") == 1
    service.publish("chat/c1/msg", b"over tcp")
    assert alice.expect().payload == b"over tcp"
    alice.publish("chat/c1/send/alice", b"over ws")
    assert service.expect().payload == b"over ws"
    assert clients.make("alice", "wrong", transport="websockets").connect() == NOT_AUTHORIZED


def test_listening_line(broker: BrokerProcess) -> None:
    assert f"broker listening mqtt=127.0.0.1:{broker.port} ws=127.0.0.1:{broker.ws_port}" in broker.log()


@pytest.fixture
def own_broker(tmp_path: Path, redis_url: str) -> Iterator[BrokerProcess]:
    url = "sqlite:///" + str(tmp_path / "own.db")
    store = open_store(url)
    seed(store)
    store.close()
    started = start_broker(tmp_path, url, redis_url)
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(own_broker: BrokerProcess, sig: signal.Signals) -> None:
    client = Mqtt(own_broker.port, "alice", PASSWORDS["alice"])
    assert client.connect() == 0
    try:
        start = time.monotonic()
        assert own_broker.stop(sig, timeout=5) == 0
        assert time.monotonic() - start < 5
    finally:
        client.stop()
    log = own_broker.log()
    assert f"received {sig.name}, shutting down" in log
    assert "broker stopped" in log
    assert "Traceback" not in log


def test_serve_in_a_thread_sets_ready_and_stops_on_cancel(tmp_path: Path, redis_url: str) -> None:
    """Embedded use: serve() on a loop in another thread (no signal handlers there), stopped by cancel."""
    url = "sqlite:///" + str(tmp_path / "embedded.db")
    store = open_store(url)
    seed(store)
    store.close()
    settings = Settings(
        data_dir=tmp_path,
        store_url=url,
        secret_key=SECRET,
        redis_url=redis_url,
        mqtt_port=free_port(),
        ws_port=free_port(),
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping = asyncio.Event()
    outcome: list[BaseException | None] = []

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(serve(settings, ready=started))
        await started.wait()
        ready.set()
        await stopping.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcome.append(None)
        except BaseException as exc:  # reported to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert ready.wait(20)
        client = Mqtt(settings.mqtt_port, "alice", PASSWORDS["alice"])
        assert client.connect() == 0
        client.stop()
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(15)
        loop.close()
    assert outcome == [None]
    # the listeners are closed
    for port in (settings.mqtt_port, settings.ws_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
