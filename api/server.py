"""Serve the API with gunicorn, embedded (no separate config file or command line).

gunicorn is the production WSGI server: a master process that binds the socket and forks
``api_workers`` workers (gthread), restarts crashed ones, and shuts down gracefully on SIGTERM
(SIGINT: quickly). The app is built in each worker after the fork, and the store is opened
lazily there too, so no SQLite connection ever crosses a fork.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from api import metrics
from api.app import create_app
from api.context import get_context
from chatcore import logs
from chatcore.config import Settings

log = logging.getLogger("chatmq.api")

THREADS_PER_WORKER = 4
GRACEFUL_TIMEOUT_S = 10


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ChatmqLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's own lines go through chatmq's one log set-up (same format, text or JSON)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        url = f"http://{bind_address(settings.host, settings.http_port)}"
        options: dict[str, Any] = {
            "bind": [bind_address(settings.host, settings.http_port)],
            "workers": settings.api_workers,
            "worker_class": "gthread",
            "threads": THREADS_PER_WORKER,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "loglevel": settings.log_level.lower(),
            "errorlog": "-",
            "logger_class": _ChatmqLogger,
            "proc_name": "chatmq-api",
            # gunicorn >= 25.1 opens a control socket at one shared per-user path by default; two
            # APIs on one host would fight over it, and nothing here uses it.
            "control_socket_disable": True,
            "when_ready": lambda _arbiter: log.info("api listening on %s", url),
            "worker_exit": _close_worker_store,
            "child_exit": lambda _arbiter, worker: metrics.worker_exited(worker.pid),
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self._settings)


def _close_worker_store(_arbiter: object, worker: Any) -> None:
    """Close the worker's own store on its way out (lets SQLite checkpoint its WAL cleanly)."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        get_context(app).close()


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT. Returns after a clean shutdown; raises SystemExit otherwise."""
    if not logging.getLogger().handlers:
        logs.configure(settings.log_level, settings.log_format)
    settings.load_secret()  # create the key file once, before workers race to
    # Before the fork: every worker's prometheus_client then shares one sample directory.
    metrics.prepare_multiprocess_dir(str((settings.data_dir / "metrics" / f"api-{settings.http_port}").resolve()))
    master = os.getpid()
    try:
        _Server(settings).run()
    except SystemExit as exc:
        # gunicorn ends its master (and every forked worker) with sys.exit: only a clean master
        # exit becomes a return; a worker must keep exiting, never run its parent's caller code.
        if os.getpid() != master or exc.code not in (0, None):
            raise


__all__ = ["bind_address", "run"]
