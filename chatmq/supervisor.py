"""``chatmq up``: broker, bridge and API as three child processes, supervised together.

Each loop stays its own process (as in production) so a crash in one does not take the others
down; a child that dies is restarted with backoff. Shutdown order is API, bridge, broker, Redis:
the bridge finishes its in-flight writes and acks while the broker is still there to carry them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatcore.checks import mqtt_check
from chatcore.config import Settings
from chatcore.netutil import port_in_use, wait_for_port
from chatcore.store import open_store
from chatmq.localredis import LocalRedis, reachable
from chatmq.processes import terminate
from chatmq.stackinfo import ops_ports, record_stack

log = logging.getLogger("chatmq.up")

REDIS_URL_FILE = "redis.url"  # where `up` records a private Redis, for the admin commands


class PortTaken(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


class Supervisor:
    def __init__(self, settings: Settings, redis_url: str | None = None) -> None:
        self.settings = settings
        self.requested_redis_url = redis_url or os.environ.get("CHATMQ_REDIS_URL")
        self.redis: LocalRedis | None = None
        self.children: list[Child] = []
        self._stop = threading.Event()

    # --- set-up -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        settings = self.settings
        for option, port in (("--mqtt-port", settings.mqtt_port), ("--ws-port", settings.ws_port),
                             ("--http-port", settings.http_port)):
            if port_in_use(settings.host, port):
                raise PortTaken(f"port {port} on {settings.host} is already in use (another broker or server?); "
                                f"choose another with {option}")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.load_secret()  # create the key once, before three processes race for it
        open_store(settings.resolved_store_url).close()  # schema exists before the children start
        if self.requested_redis_url and reachable(self.requested_redis_url):
            redis_url = self.requested_redis_url
            log.info("using Redis at %s", redis_url)
        else:
            if self.requested_redis_url:
                log.warning("Redis at %s is not reachable; starting a private one", self.requested_redis_url)
            self.redis = LocalRedis(settings.data_dir / "redis").start()
            redis_url = self.redis.url
            log.info("started private redis-server on %s (data in %s)", redis_url, self.redis.workdir)
        (settings.data_dir / REDIS_URL_FILE).write_text(redis_url + "\n")
        broker_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        self.settings = settings.model_copy(
            update={"redis_url": redis_url, "broker_host": broker_host, "broker_port": settings.mqtt_port,
                    "data_dir": settings.data_dir.resolve()}
        )
        self.settings = self.settings.model_copy(update=ops_ports(self.settings))  # metrics and health
        record_stack(self.settings)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            if value is not None:
                env[f"CHATMQ_{name.upper()}"] = str(value)
        env["CHATMQ_STORE_URL"] = self.settings.resolved_store_url
        return env

    def _spawn(self, child: Child) -> None:
        command = [sys.executable, "-m", "chatmq.cli", child.name]
        child.process = subprocess.Popen(command, env=self._env(), start_new_session=True)
        child.started_at = time.monotonic()

    # --- run ----------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        try:
            self._prepare()
            s = self.settings
            for name, port in (("broker", s.mqtt_port), ("bridge", 0), ("api", s.http_port)):
                child = Child(name, port)
                self.children.append(child)
                self._spawn(child)
                if port and not self._wait_ready(child):
                    log.error("%s did not start listening on port %d; stopping", name, port)
                    return 1
            log.info(
                "chatmq up: mqtt://%s:%d ws://%s:%d http://%s:%d data=%s store=%s redis=%s",
                s.host, s.mqtt_port, s.host, s.ws_port, s.host, s.http_port,
                s.data_dir, s.resolved_store_url.split(":", 1)[0], s.redis_url,
            )  # fmt: skip
            self._watch()
            return 0
        finally:
            self._shutdown()

    def _wait_ready(self, child: Child, timeout: float = 30.0) -> bool:
        """The API is ready when its port accepts; the broker when it answers an MQTT handshake
        (a bare connect-and-close would be logged by the broker as a failed client)."""
        s = self.settings
        handshake = mqtt_check(s.broker_host, child.port, s.load_secret(), "chatmq-up-probe", timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if child.process is not None and child.process.poll() is not None:
                return False
            if child.name != "broker" and wait_for_port(s.broker_host, child.port, 0.2):
                return True
            if child.name == "broker":
                try:
                    handshake()
                    return True
                except ConnectionError:
                    time.sleep(0.1)
        return self._stop.is_set()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                child.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                if time.monotonic() - child.started_at > 60:
                    child.restarts, delay = 0, 0.5  # it ran a good while: start the backoff afresh
                log.error("%s exited with code %s; restarting in %.1f s", child.name, code, delay)
                if self._stop.wait(delay):
                    return
                self._spawn(child)

    def _shutdown(self) -> None:
        for child in reversed(self.children):  # api, bridge, broker
            process = child.process
            if process is None or process.poll() is not None:
                continue
            if not terminate(process, timeout=15):
                log.warning("%s did not stop within 15 s; it was killed", child.name)
        if self.redis is not None:
            self.redis.stop()
        log.info("chatmq stopped")


def recorded_redis_url(data_dir: Path) -> str | None:
    """The Redis URL a running or past ``chatmq up`` used for this data dir, if any."""
    path = data_dir / REDIS_URL_FILE
    return path.read_text().strip() if path.exists() else None
