"""``GET /metrics`` and the HTTP request latency histogram (by route, method and status), which
chatmq/api/requestlog.py's hook feeds through ``observe``, beside the request's log line.

The server (granian) runs several worker processes, and a scrape reaches one of them: each worker's
own counts would be a random slice. So the server (chatmq/api/server.py) sets PROMETHEUS_MULTIPROC_DIR (under
the data dir, emptied at start) before any worker imports prometheus_client; every worker then
writes its samples to memory-mapped files there and ``/metrics`` sums all of them. Without that
variable (tests, embedded use) the process's own registry is served. prometheus_client is only
imported inside these functions: it picks its storage mode once, at import.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_state: dict[str, Any] = {}
# (route, method, status) -> its histogram child: prometheus_client's labels() checks and joins the
# label values under a lock on every call; the set of keys is bounded by routes x methods x statuses.
_children: dict[tuple[str, str, int], Any] = {}


def _histogram() -> Any:
    if "latency" not in _state:
        from prometheus_client import Histogram

        _state["latency"] = Histogram(
            "chatmq_api_request_duration_seconds", "HTTP request latency", ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
    return _state["latency"]


def install(app: Flask) -> None:
    _histogram()
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def observe(route: str, method: str, status: int, seconds: float) -> None:
    """One request's latency; ``route`` is the route's pattern, never the raw path."""
    key = (route, method, status)
    child = _children.get(key)
    if child is None:  # two threads may both make it: labels() returns the same child to each
        child = _children[key] = _histogram().labels(route=route, method=method, status=str(status))
    child.observe(seconds)


def metrics_view() -> Response:
    """Prometheus text exposition of every worker's samples."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)


def prepare_multiprocess_dir(path: str) -> None:
    """Called by the server's main process before forking: a fresh, empty directory for this run."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ[MULTIPROC_ENV] = path

