"""``chatmq up``: broker, bridge, notifier, retention job and API as child processes, supervised together.

Each loop stays its own process (as in production) so a crash in one does not take the others
down; a child that exits is restarted after a back-off (``RestartPolicy``). Shutdown order is API,
retention, notifier, bridge, broker, Redis: the bridge finishes its in-flight writes and acks while the broker is still
there to carry them, and the broker writes what its sessions still hold to Redis before Redis stops.

Only the supervisor is in the terminal's process group: the children (and the private Redis, under
its keeper) each have their own session, so Ctrl-C, SIGTERM, SIGHUP or ``timeout`` reach the
supervisor alone and it stops everything in that order. If the supervisor itself dies (kill -9),
its children follow it, still in order (chatmq.lifeline). One stack per data dir (StackLock).
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

from redis.backoff import AbstractBackoff, ExponentialBackoff

from chatmq.cli.lifeline import Lifeline
from chatmq.cli.localredis import LocalRedis, reachable
from chatmq.cli.processes import terminate
from chatmq.cli.stackinfo import StackLock, ops_ports, record_stack, remove_stack
from chatmq.core.checks import mqtt_check
from chatmq.core.config import Settings
from chatmq.core.netutil import port_in_use, wait_for_port
from chatmq.core.store import open_store

log = logging.getLogger("chatmq.up")

REDIS_URL_FILE = "redis.url"  # where `up` records a private Redis, for the admin commands


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CHILD_STOP_TIMEOUT_S = 15.0


class PortTaken(RuntimeError):
    pass


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that exited: redis-py's exponential back-off over its exits in a row
    (0.25, 0.5, 1, 2, 4, then every 5 s), counted afresh once a child has run ``stable_after`` seconds.
    A crash loop costs seconds of outage per crash, never half a minute."""

    backoff: AbstractBackoff = field(default_factory=lambda: ExponentialBackoff(cap=5.0, base=0.25))
    stable_after: float = 10.0

    def restarts(self) -> Restarts:
        return Restarts(self)


@dataclass
class Restarts:
    """One child's exits in a row, under a policy."""

    policy: RestartPolicy
    in_a_row: int = 0

    def next_delay(self, ran_for: float) -> float:
        """Seconds to wait before restarting a child that exited after running ``ran_for`` seconds."""
        if ran_for >= self.policy.stable_after:
            self.in_a_row = 0
        delay = float(self.policy.backoff.compute(self.in_a_row))
        self.in_a_row += 1
        return delay


@dataclass
class Child:
    name: str
    port: int
    restarts: Restarts
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, redis_url: str | None = None,
                 restart_policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.requested_redis_url = redis_url or os.environ.get("CHATMQ_REDIS_URL")
        self.restart_policy = restart_policy or RestartPolicy()
        self.redis: LocalRedis | None = None
        self.children: list[Child] = []
        self.lock = StackLock(settings.data_dir)
        self.lifeline: Lifeline | None = None
        self._stop = threading.Event()
        self._up = False

    # --- set-up -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        settings = self.settings
        self.lock.acquire()  # DataDirBusy: before anything else looks at or writes to the data dir
        self.lifeline = Lifeline(hold=(self.lock.fd,) if self.lock.fd is not None else ())
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
            assert self.lifeline is not None
            self.redis = LocalRedis(settings.data_dir / "redis", launcher=self.lifeline.spawn_kept).start()
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
        """In its own session (the terminal's Ctrl-C reaches the supervisor only); it dies with the
        supervisor and holds the lifeline and the data dir's lock (chatmq.lifeline)."""
        assert self.lifeline is not None
        command = [sys.executable, "-m", "chatmq.cli", child.name]
        child.process = self.lifeline.spawn(command, env=self._env(), start_new_session=True)
        child.started_at = time.monotonic()

    # --- run ----------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        try:
            self._prepare()
            s = self.settings
            for name, port in (("broker", s.mqtt_port), ("bridge", 0), ("notifier", 0), ("retention", 0),
                               ("api", s.http_port)):
                if self._stop.is_set():  # stopped while starting: start nothing more
                    return 0
                child = Child(name, port, self.restart_policy.restarts())
                self.children.append(child)
                self._spawn(child)
                if port and not self._wait_ready(child):
                    log.error("%s did not start listening on port %d; stopping", name, port)
                    return 1
            if self._stop.is_set():
                return 0
            self._up = True
            log.info(
                "chatmq up: mqtt://%s:%d ws://%s:%d http://%s:%d data=%s store=%s redis=%s",
                s.host, s.mqtt_port, s.host, s.ws_port, s.host, s.http_port,
                s.data_dir, s.resolved_store_url.split(":", 1)[0], s.redis_url,
            )  # fmt: skip
            self._watch()
            return 0
        finally:
            self._shutdown()

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stop.is_set():
            log.info("%s: already stopping, in order (API, bridge, broker, Redis)", signal.Signals(signum).name)
        self._stop.set()

    def _wait_ready(self, child: Child, timeout: float = 30.0) -> bool:
        """The API is ready when its port accepts; the broker when it answers an MQTT handshake
        (a bare connect-and-close would be logged by the broker as a failed client). True as well
        when a stop was asked meanwhile (the caller checks)."""
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
        while not self._stop.wait(0.2):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                delay = child.restarts.next_delay(time.monotonic() - child.started_at)
                log.error("%s exited with code %s; restarting in %g s", child.name, code, delay)
                if self._stop.wait(delay):
                    return
                self._spawn(child)

    def _shutdown(self) -> None:
        for child in reversed(self.children):  # api, retention, notifier, bridge, broker
            process = child.process
            if process is None or process.poll() is not None:
                continue
            if not terminate(process, timeout=CHILD_STOP_TIMEOUT_S):
                log.warning("%s did not stop within %g s; it was killed", child.name, CHILD_STOP_TIMEOUT_S)
        if self.redis is not None:
            self.redis.stop()
        if self.lock.fd is not None:  # ours: another stack's record is not ours to remove
            remove_stack(self.settings.data_dir)
        if self.lifeline is not None:
            self.lifeline.close()
        self.lock.release()
        if self._up:
            log.info("chatmq stopped")
        elif self.children or self.redis is not None:
            log.info("chatmq stopped what it had started (it was not up yet)")


def recorded_redis_url(data_dir: Path) -> str | None:
    """The Redis URL a running or past ``chatmq up`` used for this data dir, if any."""
    path = data_dir / REDIS_URL_FILE
    return path.read_text().strip() if path.exists() else None
