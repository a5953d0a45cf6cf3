"""Serve the API with granian, embedded (no separate config file or command line).

granian parses HTTP in Rust on an event loop: a master process binds the socket and starts
``api_workers`` worker processes, restarts crashed ones, and stops them on SIGTERM or SIGINT. Each
worker runs the Flask app behind chatmq/api/front.py, which reads a request's body on the event loop and
only then gives it one of ``THREADS_PER_WORKER`` threads. So a slow or idle client costs a socket,
not a thread; its request head must arrive within ``http_read_timeout_s`` (an idle connection,
new or kept alive, is closed after as long), its body within front.body_deadline_s.

The app is built in each worker after the fork, and the store is opened lazily there too, so no
SQLite connection ever crosses a fork.
"""

from __future__ import annotations

import logging
import os
import signal
from functools import partial
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server import Server

from chatmq.api import metrics
from chatmq.api.app import MAX_REQUEST_BYTES, create_app
from chatmq.api.front import BufferedFront
from chatmq.api.media import MULTIPART_SLACK
from chatmq.core import logs
from chatmq.core.config import Settings
from chatmq.core.parentdeath import end_with_parent

log = logging.getLogger("chatmq.api")

THREADS_PER_WORKER = 4
GRACEFUL_TIMEOUT_S = 10
BACKLOG = 4096
# Connections one worker holds at once (idle and slow ones included) before it stops accepting.
CONNECTIONS_PER_WORKER = 2048

# granian's own lines go through chatmq's one log set-up (same format, text or JSON).
_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {},
    "loggers": {"_granian": {"handlers": [], "propagate": True}, "granian.access": {"handlers": [], "propagate": True}},
}


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def max_body_bytes(settings: Settings) -> int:
    """The largest body any route accepts (a media upload); each route checks its own limit."""
    return max(MAX_REQUEST_BYTES, settings.media_max_bytes + MULTIPART_SLACK)


def build_front(settings: Settings, main_pid: int, _target: str = "") -> BufferedFront:
    """Runs in each worker after the fork: it ends with the main process (even a SIGKILLed one),
    logging, then the app behind its buffering front.

    The worker's main thread runs inside granian's native server loop, where a Python signal
    handler may never get to run, so a SIGTERM from the kernel could be left pending while the
    orphan goes on serving: the worker is ended with SIGKILL instead. The API keeps no state a
    worker must flush (every store write is its own transaction)."""
    end_with_parent(main_pid, signal.SIGKILL)
    logs.configure(settings.log_level, settings.log_format, settings.log_levels)
    return BufferedFront(create_app(settings), threads=THREADS_PER_WORKER, max_body_bytes=max_body_bytes(settings),
                         body_grace_s=settings.http_read_timeout_s)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT. Returns after a clean shutdown; raises SystemExit otherwise."""
    if not logging.getLogger().handlers:
        logs.configure(settings.log_level, settings.log_format)
    settings.load_secret()  # create the key file once, before workers race to
    # Before the fork: every worker's prometheus_client then shares one sample directory.
    metrics.prepare_multiprocess_dir(str((settings.data_dir / "metrics" / f"api-{settings.http_port}").resolve()))
    options: dict[str, Any] = {
        "address": settings.host,
        "port": settings.http_port,
        "interface": Interfaces.RSGI,
        "workers": settings.api_workers,
        "http": HTTPModes.http1,
        "websockets": False,
        "backlog": BACKLOG,
        "backpressure": CONNECTIONS_PER_WORKER,
        "http1_settings": HTTP1Settings(header_read_timeout=round(settings.http_read_timeout_s * 1000)),
        "respawn_failed_workers": True,
        "workers_kill_timeout": GRACEFUL_TIMEOUT_S,
        "log_level": settings.log_level.lower(),
        "log_dictconfig": _LOGGING,
    }
    server = Server("chatmq-api", **options)
    url = f"http://{bind_address(settings.host, settings.http_port)}"
    server.on_startup(lambda: log.info("api listening on %s", url))
    server.serve(target_loader=partial(build_front, settings, os.getpid()))


__all__ = ["bind_address", "run"]
