"""``python -m chatmq.api`` under granian, over real HTTP, then SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from chatmq.core.auth import hash_password
from chatmq.core.liveness import BRIDGE_ALIVE_KEY
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import open_store
from tests.api.helpers import api_env
from tests.mosquitto import LocalMosquitto

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def http(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_serves_and_stops_on_sigterm(
    data_dir: Path, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = open_store("sqlite:///" + str(data_dir / "chatmq.db"))
    store.create_user("alice", hash_password("pw"))
    store.create_conversation("c1", ["alice"], title="notes")
    store.close()
    redis_client.set(BRIDGE_ALIVE_KEY, "1", px=60_000)

    broker = LocalMosquitto(tmp_path / "mosquitto").start()  # any standard MQTT broker will do
    port = free_port()
    env = api_env(data_dir, port, redis_url, CHATMQ_BROKER_PORT=str(broker.port), CHATMQ_API_WORKERS="2")
    proc = subprocess.Popen([sys.executable, "-m", "chatmq.api"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port("127.0.0.1", port, timeout=20), "api did not start listening"
        base = f"http://127.0.0.1:{port}"
        status, health = http("GET", f"{base}/healthz")
        assert (status, health["status"]) == (200, "ok"), health

        # The whole chain in the workers: lazy per-process SQLite store, argon2, token, bearer check.
        status, issued = http("POST", f"{base}/v1/auth/token", {"username": "alice", "password": "pw"})
        assert status == 200, issued
        status, convs = http("GET", f"{base}/v1/conversations", token=issued["token"])
        assert status == 200 and [c["id"] for c in convs["conversations"]] == ["c1"]
        status, missing = http("GET", f"{base}/nope")
        assert status == 404 and missing["error"]["code"] == "not_found"

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        broker.stop()
    assert proc.returncode == 0, output
    assert f"api listening on http://127.0.0.1:{port}" in output
    assert "Traceback" not in output, output
    assert not wait_for_port("127.0.0.1", port, timeout=0.2)


def test_workers_end_when_the_main_process_is_killed(data_dir: Path, redis_url: str) -> None:
    """SIGKILL of the server's main process (it cannot pass anything on) still ends its workers:
    no orphan keeps serving, holding the port or the data dir's lock."""
    import psutil

    port = free_port()
    env = api_env(data_dir, port, redis_url, CHATMQ_API_WORKERS="2")
    workers: list[psutil.Process] = []
    proc = subprocess.Popen([sys.executable, "-m", "chatmq.api"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", port, timeout=20), "api did not start listening"
        deadline = time.monotonic() + 20
        while len(workers := psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"workers outlived their main process: {[w.pid for w in alive]}"
        assert not wait_for_port("127.0.0.1", port, timeout=0.2)
    finally:
        for leftover in [proc, *workers]:  # even when the test failed: no orphan outlives it
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                leftover.kill()
        proc.wait()
