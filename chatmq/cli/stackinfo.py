"""What a running ``chatmq up`` tells the admin commands about itself, through the data dir.

The operator commands (``chatmq clients``, ``stats``, ``tail``...) run as separate processes with
only the data dir in common with the stack; ``up`` records where its servers listen in
``stack.json`` there (removed when it stops), as it already records a private Redis in ``redis.url``.

One stack per data dir: ``up`` holds an exclusive lock (flock) on ``stack.lock`` and hands its fd to
every process it starts, so the kernel releases it only once the last of them has exited, however
they end. A second ``up`` on the same data dir is refused while it is held.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from chatmq.core.config import Settings
from chatmq.core.netutil import free_port

STACK_FILE = "stack.json"
LOCK_FILE = "stack.lock"


class DataDirBusy(RuntimeError):
    """Another ``chatmq up`` (or what is left of it) holds the data dir."""


class StackLock:
    """The data dir's lock; ``fd`` is what the stack's processes inherit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> StackLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirBusy(_busy_message(self.path.parent, holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {datetime.now().strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _busy_message(data_dir: Path, holder: str) -> str:
    stack = read_stack(data_dir)
    where = ", ".join(f"{name} {stack[key]}" for name, key in (("MQTT", "mqtt_port"), ("HTTP", "http_port"))
                      if stack.get(key))
    about = "; ".join(filter(None, [holder, where]))
    return (f"another chatmq stack is running on the data dir {data_dir}{f' ({about})' if about else ''}: "
            "stop it first (Ctrl-C in its terminal), or give this one its own --data-dir")


def ops_ports(settings: Settings) -> dict[str, int]:
    """Metrics ports for the broker, bridge and notifier: the configured ones, else free ones."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return {
        "broker_metrics_port": settings.broker_metrics_port or free_port(host),
        "bridge_metrics_port": settings.bridge_metrics_port or free_port(host),
        "notifier_metrics_port": settings.notifier_metrics_port or free_port(host),
    }


def record_stack(settings: Settings) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    info = {
        "pid": os.getpid(),
        "host": host,
        "mqtt_port": settings.mqtt_port,
        "ws_port": settings.ws_port,
        "http_port": settings.http_port,
        "broker_metrics_port": settings.broker_metrics_port,
        "bridge_metrics_port": settings.bridge_metrics_port,
        "notifier_metrics_port": settings.notifier_metrics_port,
        "redis_url": settings.redis_url,
    }
    path = settings.data_dir / STACK_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(path)


def remove_stack(data_dir: Path) -> None:
    (data_dir / STACK_FILE).unlink(missing_ok=True)


def read_stack(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
