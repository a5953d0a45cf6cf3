"""A private redis-server child process, for embedded runs and for tests.

Tests never touch the machine's shared Redis: each session gets its own server on a free port.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from chatmq.cli.processes import terminate
from chatmq.core.netutil import free_port, wait_for_port

Launcher = Callable[[Sequence[str]], "subprocess.Popen[bytes]"]


class RedisNotInstalled(RuntimeError):
    pass


def _plain(command: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class LocalRedis:
    """Start with ``start()``; ``url`` is then set; ``stop()`` shuts it down (SIGTERM, then kill).

    ``launcher`` runs the redis-server command line (``chatmq up`` runs it under its lifeline keeper,
    chatmq.lifeline); by default it is a plain child process."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = True,
                 launcher: Launcher = _plain) -> None:
        self.workdir = Path(workdir).resolve()  # redis-server resolves --logfile after chdir to --dir
        self.port = port or free_port()
        self.persist = persist
        self.launcher = launcher
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalled(
                "redis-server is not installed: run 'make install' (installs it on Debian as root), "
                "install it yourself ('apt-get install redis-server'), or set CHATMQ_REDIS_URL"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.persist else "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.process = self.launcher(args)
        if not wait_for_port("127.0.0.1", self.port, timeout):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}; see {self.workdir}/redis.log")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        terminate(self.process, timeout)


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False
