"""The front of the WSGI app: a request gets a thread only once it has fully arrived.

granian (chatmq/api/server.py) parses HTTP in Rust on an event loop and bounds how long a request head
may take to arrive. This front does the same for the body: it has the whole body read on the event
loop, within a deadline that grows with its declared size and under a size cap, and only then runs
the Flask app on a small thread pool, one hop per request: the thread gets the whole request and
gives back the whole response (status, headers, body), which granian then writes. A client that
trickles its body, never finishes it, or reads its answer slowly, therefore holds a socket and a
few bytes, never a thread: a few hundred slow or idle clients cannot starve the ones that are quick.
Responses are small JSON documents or media files (at most ``media_max_bytes``), so holding one
whole in memory costs less than a thread per slow reader would.

It speaks RSGI, granian's own interface, rather than ASGI: the body arrives in one await and the
response leaves in one call, where ASGI's message passing (and a2wsgi's thread crossings per
message on top) made each history request cost 15-45% more CPU than gunicorn's threads did
(docs/benchmarks.md). ``environ`` below is PEP 3333's mapping, built from granian's request scope.

Refusals use the API's one error shape (chatmq/api/errors.py): 408 ``request_timeout`` when the body is
late, 413 ``too_large`` when it is over the cap. When the worker stops, the app's own store is
closed (lets SQLite checkpoint its WAL cleanly).
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import orjson
from flask import Flask
from granian.rsgi import ProtocolClosed

from chatmq.api.context import get_context
from chatmq.api.errors import CODES

# A body gets a grace time (http_read_timeout_s, 10 s by default) plus one second per MIN_BODY_RATE
# bytes it declares: a 10 MiB upload may take 10 + 210 s (a 400 kbit/s link), a login 10 s.
MIN_BODY_RATE = 50_000  # bytes per second


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    """The parts of granian's RSGI request scope used here."""

    http_version: str
    server: str
    client: str
    scheme: str
    method: str
    path: str
    query_string: str

    @property
    def headers(self) -> Headers: ...


class BodyTooLarge(Exception):
    pass


def body_deadline_s(declared_bytes: int, grace_s: float) -> float:
    return grace_s + declared_bytes / MIN_BODY_RATE


class BufferedFront:
    """RSGI app: whole bodies first (bounded in time and size), then the WSGI app on ``threads``."""

    def __init__(self, app: Flask, *, threads: int, max_body_bytes: int, body_grace_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_grace_s = body_grace_s
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="chatmq-api")

    async def __rsgi__(self, scope: Scope, proto: Any) -> None:
        headers = scope.headers
        length = headers.get("content-length")
        declared = _as_size(length) if length is not None else None
        if declared is not None and declared > self.max_body_bytes:
            _refuse(proto, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body = b""
        if declared or (declared is None and "transfer-encoding" in headers):
            timeout = body_deadline_s(declared if declared is not None else self.max_body_bytes, self.body_grace_s)
            try:
                body = await asyncio.wait_for(self._read_body(proto, declared is not None), timeout)
            except TimeoutError:
                _refuse(proto, 408, f"request body not received within {timeout:.0f} s")
                return
            except BodyTooLarge:
                _refuse(proto, 413, f"request body over {self.max_body_bytes} bytes")
                return
            except ProtocolClosed:
                return  # the client went away before sending it all
        environ = _environ(scope, headers, body)
        loop = asyncio.get_running_loop()
        status, response_headers, content = await loop.run_in_executor(self._threads, self._call_app, environ)
        proto.response_bytes(status, response_headers, content)

    async def _read_body(self, proto: Any, length_declared: bool) -> bytes:
        if length_declared:  # already checked against the cap; granian stops at the declared length
            return bytes(await proto())
        chunks: list[bytes] = []
        size = 0
        async for chunk in proto:
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _call_app(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """In a pool thread: the whole WSGI call, from environ to the last byte of the response."""
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return chunks.append

        iterable = self.app(environ, start_response)
        try:
            chunks.extend(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status.split(" ", 1)[0]), headers, b"".join(chunks)

    def __rsgi_init__(self, _loop: asyncio.AbstractEventLoop) -> None:
        pass

    def __rsgi_del__(self, _loop: asyncio.AbstractEventLoop) -> None:
        self._threads.shutdown(wait=True)
        get_context(self.app).close()


def _as_size(value: str) -> int | None:
    try:
        return max(0, int(value))
    except ValueError:
        return None


def _split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def _environ(scope: Scope, headers: Headers, body: bytes) -> dict[str, Any]:
    server_host, server_port = _split_address(scope.server)
    client_host, client_port = _split_address(scope.client)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        # PEP 3333: the path as bytes-in-latin-1 (granian hands it over decoded as UTF-8)
        "PATH_INFO": scope.path.encode().decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server_host,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": client_host,
        "REMOTE_PORT": client_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,  # the body is whole: read to its end, whatever its framing was
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if body or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(len(body))  # a chunked body, now whole, has a length too
    return environ


def _refuse(proto: Any, status: int, message: str) -> None:
    payload = orjson.dumps({"error": {"code": CODES[status], "message": message}})
    proto.response_bytes(status, [("content-type", "application/json"), ("connection", "close")], payload)
