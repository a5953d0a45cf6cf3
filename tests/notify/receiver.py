"""A real local HTTP server that records every request byte for byte: the push gateway, the
webhook receivers and the FCM/APNs stand-ins of the tests. Answers come from a script (a status,
optionally a body, per request in turn) and then from a default."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # as sent (names in their original case); duplicates joined with ", "
    body: bytes
    at: float

    def json(self) -> dict:
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0


class Receiver:
    def __init__(self, default: Reply | None = None) -> None:
        self.requests: list[Request] = []
        self.script: list[Reply] = []
        self.default = default or Reply()
        self.decide: Callable[[Request], Reply | None] | None = None  # per-request answers, before the script
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = Request(self.command, self.path, {k: v for k, v in self.headers.items()}, body, time.time())
                reply = receiver._answer(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.decide is not None:
                decided = self.decide(request)
                if decided is not None:
                    return decided
            return self.script.pop(0) if self.script else self.default

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, check: Callable[[list[Request]], bool], timeout: float = 15.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.received()
            if check(seen):
                return seen
            time.sleep(0.02)
        raise AssertionError(f"receiver did not see what was expected within {timeout}s; got {len(self.received())}")
