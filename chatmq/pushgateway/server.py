"""The gateway's HTTP side: ``POST /_chatmq/push/v1/notify`` takes one chatmq notification,
sends it to FCM or APNs, and answers ``{"rejected": [tokens]}`` (200) when delivered or when the
provider declared the token dead, 502 when the provider is busy or down (chatmq retries), 400
when the request cannot succeed (an unconfigured platform, a refusal): chatmq dead-letters it.

Credentials tokens are cached: Google access tokens until a minute before they expire, APNs
provider tokens for 50 minutes; an auth failure refreshes them and tries once more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from flask import Flask, Response, request
from werkzeug.serving import make_server

from chatmq.pushgateway import formats
from chatmq.pushgateway.config import GatewayConfig
from chatmq.pushgateway.formats import ProviderRequest, Verdict

log = logging.getLogger(__name__)

NOTIFY_PATH = "/_chatmq/push/v1/notify"
MAX_BODY_BYTES = 64 * 1024


class Gateway:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._fcm_token: tuple[str, float] | None = None  # (access token, expires at)
        self._apns_token: tuple[str, float] | None = None  # (provider token, refresh at)
        self._http = httpx.Client(timeout=config.timeout_s)
        apns = config.apns
        self._apns_http = httpx.Client(timeout=config.timeout_s, http2=apns.http2) if apns else None

    def close(self) -> None:
        self._http.close()
        if self._apns_http is not None:
            self._apns_http.close()

    def notify(self, note: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Deliver one notification: (status for chatmq, body for chatmq)."""
        platform = note["device"]["platform"]
        if platform == "fcm" and (fcm := self._config.fcm) is not None:
            verdict, detail = self._send(
                lambda refresh: formats.fcm_request(fcm, note, self._google_token(refresh)), formats.fcm_verdict
            )
        elif platform == "apns" and (apns := self._config.apns) is not None:
            verdict, detail = self._send(
                lambda refresh: formats.apns_request(apns, note, self._apple_token(refresh)), formats.apns_verdict,
                apns=True,
            )
        else:
            return 400, {"error": f"platform {platform!r} is not configured in this gateway"}
        if verdict is Verdict.DELIVERED:
            return 200, {"rejected": []}
        if verdict is Verdict.DEAD_TOKEN:
            return 200, {"rejected": [note["device"]["token"]]}
        if verdict is Verdict.RETRY:
            return 502, {"error": detail}
        return 400, {"error": detail}

    def _send(
        self, build: Callable[[bool], ProviderRequest], judge: Callable[[int, bytes], Verdict], *, apns: bool = False
    ) -> tuple[Verdict, str]:
        client = self._apns_http if apns else self._http
        assert client is not None
        for refresh in (False, True):
            try:
                prepared = build(refresh)
                response = client.request(prepared.method, prepared.url, headers=list(prepared.headers),
                                          content=prepared.body)  # fmt: skip
            except httpx.HTTPError as exc:
                return Verdict.RETRY, f"{type(exc).__name__}: {exc}"
            verdict = judge(response.status_code, response.content)
            if verdict is not Verdict.AUTH:
                return verdict, f"provider answered {response.status_code}: {response.text[:300]}"
        return Verdict.RETRY, "provider refused fresh credentials"

    def _google_token(self, refresh: bool) -> str:
        config = self._config.fcm
        assert config is not None
        with self._lock:
            cached = self._fcm_token
            if cached is not None and not refresh and self._clock() < cached[1]:
                return cached[0]
        token_request = formats.oauth_token_request(config, formats.oauth_assertion(config, int(self._clock())))
        response = self._http.request(token_request.method, token_request.url, headers=list(token_request.headers),
                                      content=token_request.body)  # fmt: skip
        if response.status_code != 200:
            raise httpx.HTTPError(f"Google token endpoint answered {response.status_code}: {response.text[:200]}")
        answer = response.json()
        token, lifetime = str(answer["access_token"]), float(answer.get("expires_in", 3600))
        with self._lock:
            self._fcm_token = (token, self._clock() + max(0.0, lifetime - 60))
        return token

    def _apple_token(self, refresh: bool) -> str:
        config = self._config.apns
        assert config is not None
        with self._lock:
            cached = self._apns_token
            if cached is not None and not refresh and self._clock() < cached[1]:
                return cached[0]
            now = self._clock()
            token = formats.apns_provider_token(config, int(now))
            self._apns_token = (token, now + formats.APNS_TOKEN_REFRESH_S)
            return token


def create_app(gateway: Gateway) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post(NOTIFY_PATH)
    def notify() -> Response:
        data = request.get_json(silent=True)
        note = data.get("notification") if isinstance(data, dict) else None
        if not isinstance(note, dict) or not isinstance(note.get("device"), dict):
            return _json(400, {"error": "expected {\"notification\": {..., \"device\": {...}}}"})
        try:
            status, body = gateway.notify(note)
        except (KeyError, TypeError, ValueError) as exc:
            return _json(400, {"error": f"malformed notification: {exc!r}"})
        log.info("notification %s -> %s %s", note.get("id"), note["device"].get("platform"), status)
        return _json(status, body)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json(200, {"status": "ok"})

    return app


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (werkzeug's threaded server; put a proxy in front for TLS)."""
    import signal

    gateway = Gateway(config)
    server = make_server(host, port, create_app(gateway), threaded=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("push gateway on http://%s:%d%s (fcm %s, apns %s)", host, port, NOTIFY_PATH,
             "on" if config.fcm else "off", "on" if config.apns else "off")
    done.wait()
    server.shutdown()
    gateway.close()
