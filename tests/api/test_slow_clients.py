"""Slow and idle HTTP clients against the real ``python -m chatmq.api``: they must not starve real clients.

Three floods at once, against a single worker (the fewest threads): slowloris clients that send a
partial request head and then one more header line every second, idle connections that send
nothing, and clients that declare a body and trickle it a byte at a time. Meanwhile a real client
logs in and reads history, each request answered within 2 s (milliseconds on a quiet machine);
and every flooding connection is ended by the server within the read timeout (the slow bodies
with the API's 408 error).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.core.auth import hash_password
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import open_store
from tests.api.helpers import api_env

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
READ_TIMEOUT_S = 2.0
SLOWLORIS, IDLE, SLOW_BODIES = 16, 200, 16


@pytest.fixture
def api_url(data_dir: Path, redis_url: str) -> Iterator[str]:
    store = open_store("sqlite:///" + str(data_dir / "chatmq.db"))
    store.create_user("alice", hash_password("pw"))
    store.create_conversation("c1", ["alice"], title="notes")
    store.close()
    port = free_port()
    env = api_env(data_dir, port, redis_url, CHATMQ_API_WORKERS="1", CHATMQ_HTTP_READ_TIMEOUT_S=str(READ_TIMEOUT_S))
    proc = subprocess.Popen([sys.executable, "-m", "chatmq.api"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", port, timeout=20), "api did not start listening"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Flood:
    """Connections that each hold the server up in their own way, fed by one background thread."""

    def __init__(self, port: int) -> None:
        self.slowloris = [self._open(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(SLOWLORIS)]
        self.idle = [self._open(port, b"") for _ in range(IDLE)]
        head = (b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{")
        self.slow_bodies = [self._open(port, head) for _ in range(SLOW_BODIES)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    @staticmethod
    def _open(port: int, first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first:
            sock.sendall(first)
        return sock

    def _trickle(self) -> None:
        line = 0
        while not self._stop.wait(0.5):
            line += 1
            for sock in self.slowloris:
                _send_quietly(sock, b"X-Line-%d: a\r\n" % line)
            for sock in self.slow_bodies:
                _send_quietly(sock, b" ")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.slowloris + self.idle + self.slow_bodies:
            sock.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed it: what the test expects sooner or later
        sock.sendall(data)


def _ended_by_server(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before closing ``sock`` (b"" for a plain close), None if still open."""
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except OSError:
            return received  # reset
        if not chunk:
            return received
        received += chunk
    return None


def _timed(request: urllib.request.Request) -> tuple[float, int, bytes]:
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=5) as response:
        return time.monotonic() - started, response.status, response.read()


def test_slow_and_idle_clients_do_not_starve_real_ones(api_url: str) -> None:
    port = int(api_url.rsplit(":", 1)[1])
    flood = Flood(port)
    opened = time.monotonic()
    try:
        time.sleep(0.5)  # every flooding connection is in and stalling
        # A real client meanwhile: log in (a POST with a body), then read history, repeatedly.
        slowest = 0.0
        while time.monotonic() - opened < READ_TIMEOUT_S * 0.75:
            login = urllib.request.Request(
                f"{api_url}/v1/auth/token", data=json.dumps({"username": "alice", "password": "pw"}).encode(),
                headers={"Content-Type": "application/json"}, method="POST",
            )  # fmt: skip
            took, status, body = _timed(login)
            assert status == 200
            slowest = max(slowest, took)
            history = urllib.request.Request(f"{api_url}/v1/conversations/c1/messages",
                                             headers={"Authorization": f"Bearer {json.loads(body)['token']}"})
            took, status, _ = _timed(history)
            assert status == 200
            took_health, status, _ = _timed(urllib.request.Request(f"{api_url}/healthz"))
            assert status == 200
            slowest = max(slowest, took, took_health)
        # Each takes milliseconds alone (a login ~0.1 s of argon2); with gunicorn's threads, none answered.
        assert slowest < 2.0, f"a real request took {slowest:.2f} s under the flood"

        # The server ends every flooding connection itself, within the read timeout (+ slack).
        deadline = opened + READ_TIMEOUT_S + 3.0
        stalled = [sock for sock in flood.slowloris + flood.idle if _ended_by_server(sock, deadline) is None]
        assert not stalled, f"{len(stalled)} slow or idle connections still open after {READ_TIMEOUT_S} s"
        # A declared 1000-byte body gets the grace time plus 1000 / 50 kB/s: 2.02 s here.
        for sock in flood.slow_bodies:
            answer = _ended_by_server(sock, deadline)
            assert answer is not None, "a trickled body still held its connection"
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:200]
            assert json.loads(payload)["error"]["code"] == "request_timeout"
    finally:
        flood.stop()
