"""One log line per HTTP request, with a request id that the caller sees too, and the request's
sample of the latency histogram (chatmq/api/metrics.py).

The id comes from the caller's ``X-Request-Id`` (a proxy's, so its logs and ours join up) when it
is short and plain, else a new one; it is echoed in the response header and available to views as
``g.request_id``. Never logged: headers, bodies, query strings (tokens and passwords travel there).

Both are one hook pair: a request is timed once, and its route, method and status are read once
for the log line and the histogram alike (two pairs cost ~0.01 ms more per request, on a history
page's ~0.5 ms; docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, Response, g, request

from chatmq.api import metrics

log = logging.getLogger("chatmq.api.request")
HEADER = "X-Request-Id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def install(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_end)


def _begin() -> None:
    g.request_started = time.perf_counter()
    given = request.headers.get(HEADER, "")
    g.request_id = given if _ACCEPTABLE.match(given) else secrets.token_hex(8)


def _end(response: Response) -> Response:
    ended = time.perf_counter()
    request_id = g.get("request_id")
    if request_id is None:
        return response
    response.headers[HEADER] = request_id
    elapsed = ended - g.request_started
    current = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not four
    # The route pattern, never the raw path: one series per endpoint, not per conversation id.
    route = current.url_rule.rule if current.url_rule is not None else "unmatched"
    method = current.method
    status = response.status_code
    metrics.observe(route, method, status, elapsed)
    log.info("request_id=%s method=%s route=%s status=%d ms=%.1f user=%s", request_id, method, route, status,
             elapsed * 1000, g.get("user", "-"), extra={"request_id": request_id, "status": status})
    return response
