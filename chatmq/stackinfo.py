"""What a running ``chatmq up`` tells the admin commands about itself, through the data dir.

The operator commands (``chatmq clients``, ``stats``, ``tail``...) run as separate processes with
only the data dir in common with the stack; ``up`` records where its servers listen in
``stack.json`` there, as it already records a private Redis in ``redis.url``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chatcore.config import Settings
from chatcore.netutil import free_port

STACK_FILE = "stack.json"


def ops_ports(settings: Settings) -> dict[str, int]:
    """Metrics ports for the broker and bridge: the configured ones, else free ones."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return {
        "broker_metrics_port": settings.broker_metrics_port or free_port(host),
        "bridge_metrics_port": settings.bridge_metrics_port or free_port(host),
    }


def record_stack(settings: Settings) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    info = {
        "pid": os.getpid(),
        "host": host,
        "mqtt_port": settings.mqtt_port,
        "http_port": settings.http_port,
        "broker_metrics_port": settings.broker_metrics_port,
        "bridge_metrics_port": settings.bridge_metrics_port,
        "redis_url": settings.redis_url,
    }
    path = settings.data_dir / STACK_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(path)


def read_stack(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
