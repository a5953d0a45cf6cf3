"""Run the real stack (`chatmq up`) as a subprocess on ephemeral ports, and talk to it."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from chatmq.clients import ChatClient
from chatmq.core.netutil import free_port

PASSWORD = "correct horse battery"


class Stack:
    """``redis_url`` None: `chatmq up` starts its own private redis-server, as `make run` does."""

    def __init__(self, data_dir: Path, redis_url: str | None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.mqtt_port, self.ws_port, self.http_port = free_port(), free_port(), free_port()
        self.extra_env = {"CHATMQ_HEARTBEAT_INTERVAL_S": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"up-{self.http_port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env.update(self.extra_env)
        env["CHATMQ_DATA_DIR"] = str(self.data_dir)
        return env

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "chatmq.cli", "up", "--data-dir", str(self.data_dir),
            "--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port), "--http-port", str(self.http_port),
        ]  # fmt: skip
        return command + (["--redis-url", self.redis_url] if self.redis_url else [])

    def start(self, timeout: float = 60.0, *, wrap: list[str] | None = None, new_session: bool = False) -> Stack:
        """``wrap`` goes before the command (e.g. ``timeout``); ``new_session``: the stack gets its own
        process group, as a terminal's foreground job has (``group_signal``)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([*(wrap or []), *self.command()], env=self.env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=new_session)
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> Stack:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"chatmq up exited with {self.process.returncode}:\n{self.log()}")
            status, _ = self.http("GET", "/readyz")
            if status == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"stack not healthy within {timeout}s:\n{self.log()}")

    def group_signal(self, sig: int) -> None:
        """Signal the whole process group, as a terminal does on Ctrl-C (start with new_session)."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    # --- helpers ------------------------------------------------------------------------------
    def admin(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "chatmq.cli", *args], env=self.env(), input=stdin,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"chatmq {' '.join(args)} failed: {result.stderr}")
        return result

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        self.admin("user", "add", name, "--password-stdin", stdin=password + "\n")

    def create_conv(self, conv: str, *members: str) -> None:
        self.admin("conv", "create", "--id", conv, "--members", ",".join(members))

    def client(self, user: str, password: str = PASSWORD, device: str = "phone", **kwargs: Any) -> ChatClient:
        port = self.ws_port if kwargs.get("transport") == "websockets" else self.mqtt_port
        return ChatClient("127.0.0.1", port, user, password, device=device, **kwargs).connect()

    def http(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def token(self, user: str, password: str = PASSWORD) -> str:
        status, body = self.http("POST", "/v1/auth/token", body={"username": user, "password": password})
        assert status == 200, body
        return str(body["token"])


class _Lost:
    """What ``subscribe`` reads as the SUBACK of a connection the broker closed."""

    is_failure = True


_LOST = _Lost()


class RawClient:
    """A bare paho client for what ChatClient deliberately cannot do: malformed payloads,
    forbidden topics, abusive wills. Received messages land on ``received``."""

    def __init__(self, port: int, user: str, password: str = PASSWORD, *, client_id: str = "",
                 will: tuple[str, bytes] | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"raw-{user}-{port}")
        self.client.username_pw_set(user, password)
        if will:
            self.client.will_set(will[0], will[1], qos=1)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(list(codes))
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        self.lost = threading.Event()  # the broker closed the connection (some answer a refusal so)
        self.client.on_disconnect = lambda *_: (self.lost.set(), self.subacks.put([_LOST]))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=10)

    @property
    def refused(self) -> bool:
        return bool(self.reason.is_failure)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> bool:
        """True if the broker granted the subscription (queue.Empty: no SUBACK within ``timeout``)."""
        self.client.subscribe(topic, qos)
        return not any(code.is_failure for code in self.subacks.get(timeout=timeout))

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def publish_acked(self, topic: str, payload: bytes, timeout: float = 10.0) -> bool:
        """A QoS 1 publish: True once PUBACKed, False if the broker closed the connection instead."""
        if self.lost.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        while not info.is_published():
            if self.lost.is_set() or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def expect(self, topic: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got_topic, payload = self.received.get(timeout=left)
            if got_topic == topic:
                return payload
        raise queue.Empty(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tcp_nodelay(sock: Any) -> int:
    """TCP_NODELAY of any socket-like object with ``fileno()`` (paho's TLS and WebSocket wrappers too)."""
    with socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM) as view:
        return view.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
