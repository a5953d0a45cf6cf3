"""The web app (web/): its static files under ``/app/``, and ``/app/config.json``, what the page
needs to reach the broker. ``/`` sends a browser to the app.

The files are the build in ``web/dist`` (``make web``: ``npm ci`` and ``node web/build.js``), or
``CHATMQ_WEB_DIR``. Without a build, ``/app/`` answers 503 saying how to make one; the API itself
works either way. Pages are revalidated on every load (ETag), so a new build is picked up at once.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from flask import Blueprint, Flask, Response, jsonify, redirect, send_from_directory

from chatmq.api.errors import ApiError
from chatmq.core.config import Settings

APP_PATH = "/app"
WS_PATH = "/mqtt"  # the broker accepts any path; this is the one the docs and the app use
# The app's own origin, plus the broker's WebSocket (another port) and media shown from blob URLs.
# Inline scripts (the page's import map) are allowed by their hash only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'{inline}; worker-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script\b[^>]*>(.*?)</script>", re.S | re.I)
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".json": "application/json",
          ".txt": "text/plain"}  # fmt: skip


def content_security_policy(page: bytes = b"") -> str:
    """The policy for a file of the app; for a page, its inline scripts are allowed by hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(page) if body.strip()
    ]  # fmt: skip
    return CONTENT_SECURITY_POLICY.format(inline="".join(f" {h}" for h in hashes))


def default_web_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "web" / "dist"


def install(app: Flask, settings: Settings) -> None:
    web_dir = (settings.web_dir or default_web_dir()).resolve()
    bp = Blueprint("webapp", __name__)

    def static(name: str) -> Response:
        if not (web_dir / "index.html").is_file():
            raise ApiError(503, f"the web app is not built (no {web_dir / 'index.html'}): run `make web`")
        response = send_from_directory(web_dir, name, max_age=0)  # 404 for anything outside web_dir
        kind = _TYPES.get(Path(name).suffix)
        if kind:
            response.mimetype = kind
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        page = (web_dir / name).read_bytes() if name.endswith(".html") else b""
        response.headers["Content-Security-Policy"] = content_security_policy(page)
        return response

    @bp.get("/")
    def root() -> Response:
        return redirect(f"{APP_PATH}/", 302)

    @bp.get(APP_PATH)
    def app_no_slash() -> Response:
        return redirect(f"{APP_PATH}/", 301)

    @bp.get(f"{APP_PATH}/")
    def index() -> Response:
        return static("index.html")

    @bp.get(f"{APP_PATH}/config.json")
    def config() -> Response:
        response = jsonify({
            "ws_url": settings.ws_public_url,
            "ws_port": settings.ws_port,
            "wss_port": settings.ws_tls_port or None,
            "ws_path": WS_PATH,
            "api_url": "",
            "heartbeat_interval_s": settings.heartbeat_interval_s,
            "max_body_bytes": settings.max_body_bytes,
        })  # fmt: skip
        response.headers["Cache-Control"] = "no-cache"
        return response

    @bp.get(f"{APP_PATH}/<path:name>")
    def asset(name: str) -> Response:
        return static(name)

    app.register_blueprint(bp)
