"""One log line per HTTP request, with a request id that the caller sees too.

The id comes from the caller's ``X-Request-Id`` (a proxy's, so its logs and ours join up) when it
is short and plain, else a new one; it is echoed in the response header and available to views as
``g.request_id``. Never logged: headers, bodies, query strings (tokens and passwords travel there).
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, Response, g, request

log = logging.getLogger("chatmq.api.request")
HEADER = "X-Request-Id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def install(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_end)


def _begin() -> None:
    given = request.headers.get(HEADER, "")
    g.request_id = given if _ACCEPTABLE.match(given) else secrets.token_hex(8)
    g.request_started = time.perf_counter()


def _end(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:
        return response
    response.headers[HEADER] = request_id
    elapsed_ms = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    log.info("request_id=%s method=%s route=%s status=%d ms=%.1f user=%s", request_id, request.method, route,
             response.status_code, elapsed_ms, g.get("user", "-"),
             extra={"request_id": request_id, "status": response.status_code})
    return response
