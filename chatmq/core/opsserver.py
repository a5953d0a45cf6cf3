"""The metrics and health port of the broker and the bridge: ``/metrics``, ``/healthz``, ``/readyz``.

A plain threaded HTTP server in a daemon thread, so a scrape or a health probe never runs on the
broker's event loop or the bridge's worker threads. ``/healthz`` only says the process answers;
``/readyz`` runs the service's dependency checks (each a callable returning "ok" or why not) and
answers 503 naming the failing ones, the same shape as the API's ``/readyz``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from chatmq.core.checks import OK, Check, mqtt_check, ping_check, run_checks

__all__ = ["OK", "Check", "OpsServer", "mqtt_check", "ping_check", "run_checks"]

log = logging.getLogger(__name__)

class OpsServer:
    def __init__(self, host: str, port: int, checks: Mapping[str, Check],
                 registry: CollectorRegistry = REGISTRY) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._json(200, {"status": "ok"})
                elif path == "/readyz":
                    results = run_checks(outer.checks)
                    ready = all(value == OK for value in results.values())
                    self._json(200 if ready else 503, {"status": "ok" if ready else "unavailable",
                                                       "checks": results})
                else:
                    self._json(404, {"error": {"code": "not_found", "message": f"no {path}"}})

            def _json(self, status: int, body: object) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds: not an event worth a log line

        self.checks = dict(checks)
        self.registry = registry
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz)",
                 self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
