"""``python -m chatmq.bridge`` as a real process: configured from the environment, stops on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chatmq.core.config import Settings
from chatmq.core.store import Store
from tests.bridge.devices import Device

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert proc.poll() is None, f"bridge exited early:\n{content}"
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the bridge log:\n{path.read_text()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_module_entry_point_serves_and_stops_on_signal(
    signum: signal.Signals, settings: Settings, store: Store, device: Callable[..., Device], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CHATMQ_DATA_DIR": str(settings.data_dir),
        "CHATMQ_BROKER_HOST": settings.broker_host,
        "CHATMQ_BROKER_PORT": str(settings.resolved_broker_port),
        "CHATMQ_REDIS_URL": settings.redis_url,
        "CHATMQ_SECRET_KEY": settings.secret_key or "",
    }
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "chatmq.bridge"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        content = wait_for_line(log_path, "bridge connected to broker", proc)
        line = next(ln for ln in content.splitlines() if "bridge connected to broker" in ln)
        assert f"{settings.broker_host}:{settings.resolved_broker_port}" in line
        assert "store=sqlite:///" in line and "redis=127.0.0.1:" in line

        alice = device("alice", ["user/alice/ack"])  # logged once subscribed: this send cannot be missed
        alice.publish("chat/c1/send/alice", {"client_msg_id": "p1", "body": "via process"})
        assert alice.wait_count("user/alice/ack", 1)[0]["seq"] == 1

        proc.send_signal(signum)
        assert proc.wait(15) == 0
        assert "bridge stopping" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [m.body for m in store.history("c1").messages] == ["via process"]


def test_log_lines_never_show_a_store_password() -> None:
    from chatmq.bridge.service import redact

    assert redact("mongodb://chat:s3cret@db:27017/chatmq") == "mongodb://chat:***@db:27017/chatmq"
    assert redact("sqlite:////var/lib/chatmq.db") == "sqlite:////var/lib/chatmq.db"
