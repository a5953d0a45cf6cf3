"""The chatmq services as four separate processes that can each be killed -9 and started again.

Unlike ``chatmq up`` nothing supervises them: the fault harness decides when a component dies
and when it comes back, on the same ports and the same data dir, as an orchestrator would.
Each child runs in its own process group so SIGKILL takes the API's workers down with their
master (a surviving worker would keep the port and hide the crash).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chatmq.core.liveness import BRIDGE_ALIVE_KEY
from chatmq.core.netutil import free_port, port_in_use, wait_for_port
from chatmq.core.store import open_store

COMPONENTS = ("bridge", "broker", "api", "redis")
SECOND_BRIDGE = "bridge2"  # a second bridge process with its own MQTT session, when asked for


@dataclass
class Cluster:
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    bridges: int = 1
    workers: tuple[str, ...] = ()  # partitioned bridge workers (these ids) instead of the single bridge
    own_broker: bool = True  # False: a broker runs elsewhere on mqtt_port (e.g. a RabbitMQ cluster's front)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def store_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'chatmq.db').resolve()}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env.update({
            "CHATMQ_DATA_DIR": str(self.data_dir.resolve()),
            "CHATMQ_STORE_URL": self.store_url,
            "CHATMQ_REDIS_URL": self.redis_url,
            "CHATMQ_MQTT_PORT": str(self.mqtt_port),
            "CHATMQ_WS_PORT": str(self.ws_port),
            "CHATMQ_HTTP_PORT": str(self.http_port),
            "CHATMQ_BROKER_PORT": str(self.mqtt_port),
            "CHATMQ_API_WORKERS": "1",
            "CHATMQ_HEARTBEAT_INTERVAL_S": "1",
        })  # fmt: skip
        env.update(self.extra_env)
        return env

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Cluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        open_store(self.store_url).close()  # the schema exists before three processes race for it
        bridges = list(self.workers) or ["bridge", *([SECOND_BRIDGE] if self.bridges > 1 else [])]
        names = ["redis", *(["broker"] if self.own_broker else []), *bridges, "api"]
        for name in names:
            self.spawn(name)
            self.wait_up(name, timeout)
        self.wait_healthy(timeout)
        return self

    def spawn(self, name: str) -> None:
        env = self.env()
        if name == "redis":
            command = self._redis_command()
        else:
            if name == SECOND_BRIDGE:
                env["CHATMQ_BRIDGE_CLIENT_ID"] = "chatmq-bridge-2"
            if name in self.workers:
                env["CHATMQ_BRIDGE_WORKER_ID"] = name
            command = [sys.executable, "-m", "chatmq.cli", "bridge" if self._is_bridge(name) else name]
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _is_bridge(self, name: str) -> bool:
        return name in ("bridge", SECOND_BRIDGE, *self.workers)

    def _redis_command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        workdir = (self.data_dir / "redis").resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        # appendfsync always: a kill -9 of Redis loses no acknowledged write (as a production
        # deployment that keeps broker sessions in Redis should be configured).
        return [
            binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        ]  # fmt: skip

    def port_of(self, name: str) -> int | None:
        return {"redis": self.redis_port, "broker": self.mqtt_port, "api": self.http_port}.get(name)

    def wait_up(self, name: str, timeout: float = 30.0) -> None:
        """Until the component listens (or, for the bridge, beats in Redis)."""
        port = self.port_of(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.data_dir}/logs/{name}.log")
            if port is None or wait_for_port("127.0.0.1", port, 0.1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not listen on {port} within {timeout}s")

    def kill(self, name: str) -> None:
        """SIGKILL the component's whole process group: no shutdown code runs."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        port = self.port_of(name)
        deadline = time.monotonic() + 10
        while port is not None and port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        self.spawn(name)
        self.wait_up(name, timeout)
        if self._is_bridge(name):
            self.wait_bridge_beat(name, timeout)

    def wait_bridge_beat(self, name: str, timeout: float = 30.0) -> None:
        """Until the new bridge process itself reports alive (the old one's beat may linger)."""
        pid = self.processes[name].pid
        client = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    value = client.get(BRIDGE_ALIVE_KEY)
                except redis.RedisError:
                    value = None
                if value is not None and value.decode().endswith(f":{pid}"):
                    return
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"the restarted bridge did not beat within {timeout}s")

    def health(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.api_url}/readyz", timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            status, body = self.health()
            if status == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"not healthy within {timeout}s: {status} {body}")

    def stop(self) -> None:
        """SIGTERM in reverse start order (api, bridge, broker, redis), then SIGKILL stragglers."""
        for name in ("api", *reversed(self.workers), SECOND_BRIDGE, "bridge", "broker", "redis"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
