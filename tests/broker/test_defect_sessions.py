"""Persistent sessions survive a broker restart (kept in Redis), with bounded queues; and SIGTERM
runs a clean shutdown (stock amqtt's own CLI only handles SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.netutil import free_port
from tests.broker.conftest import PASSWORDS, SECRET, start_broker
from tests.broker.inproc import BOTH, InProcessBroker
from tests.broker.mqtt import Mqtt

pytestmark = pytest.mark.timeout(60)


def _service(running: InProcessBroker, **kwargs: Any) -> Mqtt:
    client = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token, **kwargs)
    assert client.connect() == 0
    return client


def _bob(running: InProcessBroker) -> Mqtt:
    return Mqtt(running.port, "bob", PASSWORDS["bob"], client_id="bob-tablet", clean_session=False)


def _offline(running: InProcessBroker, client_id: str) -> None:
    """Wait until the broker has seen a client's DISCONNECT (what it routes next is queued)."""

    async def state() -> str | None:
        entry = running.broker.sessions.get(client_id)
        return entry[0].transitions.state if entry else None

    deadline = time.monotonic() + 5
    while running.call(state()) == "connected":
        assert time.monotonic() < deadline, f"{client_id} still connected"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", BOTH)
def test_persistent_session_survives_a_broker_restart(run_broker: Any, kind: str) -> None:
    first = run_broker(kind)
    bob = _bob(first)
    assert bob.connect() == 0
    assert bob.subscribe("chat/c1/msg", qos=1) == 1
    bob.stop()
    service = _service(first)
    service.publish("chat/c1/msg", b"while offline", qos=1)
    service.stop()
    ports = {"mqtt_port": first.port, "ws_port": first.ws_port}
    first.stop()
    second = run_broker(kind, **ports)
    bob = _bob(second)
    try:
        assert bob.connect() == 0
        assert bob.session_present is True
        assert bob.expect(timeout=3).payload == b"while offline"
        service = _service(second)
        service.publish("chat/c1/msg", b"after restart", qos=1)
        assert bob.expect(timeout=3).payload == b"after restart"  # the subscription came back too
        service.stop()
    finally:
        bob.stop()


@pytest.mark.parametrize(
    ("limit", "payload", "kept", "said"),
    [
        ({"session_queue_limit": 3}, b"", 3, "session_queue_limit=3"),
        ({"session_queue_bytes": 2500}, b"x" * 999, 2, "session_queue_bytes=2500"),  # 2 x 1,000 bytes fit
    ],
)
def test_offline_queue_is_bounded_and_says_so(
    run_broker: Any, caplog: pytest.LogCaptureFixture, limit: dict[str, int], payload: bytes, kept: int, said: str
) -> None:
    running = run_broker("ours", **limit)
    bob = _bob(running)
    assert bob.connect() == 0
    assert bob.subscribe("chat/c1/msg", qos=1) == 1
    bob.stop()
    _offline(running, "bob-tablet")
    service = _service(running)
    for i in range(5):
        service.publish("chat/c1/msg", b"%d" % i + payload, qos=1)
    service.stop()
    bob = _bob(running)
    try:
        assert bob.connect() == 0
        last = b"%d" % (kept - 1) + payload
        assert [m.payload[:1] for m in bob.wait_for(last) + bob.drain(0.3)] == [b"%d" % i for i in range(kept)]
        assert "offline queue of client_id='bob-tablet' is full (" in caplog.text and said in caplog.text
    finally:
        bob.stop()


def _bridge_away_and_alice(running: InProcessBroker) -> Mqtt:
    """The bridge's persistent session, subscribed and then disconnected; alice connected."""
    bridge = _service(running, client_id="chatmq-bridge", clean_session=False)
    assert bridge.subscribe("chat/+/send/+", qos=1) == 1
    bridge.stop()
    _offline(running, "chatmq-bridge")
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    assert alice.connect() == 0
    return alice


def test_the_bridge_session_keeps_every_acknowledged_send_past_the_device_limit(run_broker: Any) -> None:
    """The bridge is down while devices send more than a device session may queue: everything the
    broker PUBACKed reaches the bridge when it comes back, once."""
    running = run_broker("ours", session_queue_limit=100)
    alice = _bridge_away_and_alice(running)
    try:
        for i in range(1500):
            alice.client.publish("chat/c1/send/alice", b"s%d" % i, qos=1)
        alice.publish("chat/c1/send/alice", b"last", qos=1)  # PUBACKs come in order: all acked
    finally:
        alice.stop()
    bridge = _service(running, client_id="chatmq-bridge", clean_session=False)
    try:
        got = [m.payload for m in bridge.wait_for(b"last", timeout=20)]
        assert got == [b"s%d" % i for i in range(1500)] + [b"last"]
        assert bridge.drain(0.3) == []
    finally:
        bridge.stop()


def test_a_full_bridge_queue_withholds_pubacks_instead_of_dropping(run_broker: Any) -> None:
    running = run_broker("ours", service_queue_bytes=1000)
    alice = _bridge_away_and_alice(running)
    try:
        infos = [alice.client.publish("chat/c1/send/alice", b"%03d" % i + b"x" * 97, qos=1) for i in range(15)]
        time.sleep(1.0)
        acked = [i for i, info in enumerate(infos) if info.is_published()]
        assert acked == list(range(10))  # 10 x 100 bytes fit; the rest are not acknowledged
    finally:
        alice.stop()
    bridge = _service(running, client_id="chatmq-bridge", clean_session=False)
    try:
        assert [m.payload[:3] for m in bridge.drain(0.5)] == [b"%03d" % i for i in range(10)]
    finally:
        bridge.stop()


def _stock_amqtt(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """amqtt's own CLI, the way stock amqtt is run."""
    port = free_port()
    config = tmp_path / "amqtt.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    log_path = tmp_path / "amqtt.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "amqtt"), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    return proc, log_path, port


@pytest.mark.parametrize("kind", BOTH)
def test_sigterm_runs_a_clean_shutdown(tmp_path: Path, store_url: str, redis_url: str, kind: str) -> None:
    if kind == "ours":
        running = start_broker(tmp_path, store_url, redis_url)
        proc, log_path, port = running.proc, running.log_path, running.port
        done_line = "broker stopped"
    else:
        proc, log_path, port = _stock_amqtt(tmp_path)
        done_line = "Broker closed"
    try:
        client = Mqtt(port, "alice" if kind == "ours" else None, PASSWORDS["alice"] if kind == "ours" else None)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.connect() == 0
                break
            except (ConnectionRefusedError, OSError):
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert done_line in log_path.read_text(errors="replace")
        client.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

