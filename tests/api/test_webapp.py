"""The web app's files and config as the API serves them (chatmq/api/webapp.py)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from chatmq.api.webapp import default_web_dir
from tests.api.helpers import assert_error

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    """A stand-in build: the layout of web/dist."""
    root = tmp_path / "dist"
    (root / "lib").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>chatmq</title>")
    (root / "main.js").write_text("import './lib/worker.js';")
    (root / "lib" / "worker.js").write_text("self.onconnect = () => {};")
    (root / "style.css").write_text("body {}")
    (tmp_path / "secret.txt").write_text("outside the build")
    return root


def test_an_inline_script_is_allowed_by_its_hash_only(make_app: Callable[..., Flask], web_dir: Path) -> None:
    importmap = b'{"imports": {"preact": "./vendor/preact.js"}}'
    page = b'<script type="importmap">' + importmap + b'</script><script src="main.js"></script>'
    (web_dir / "index.html").write_bytes(page)
    policy = make_app(web_dir=web_dir).test_client().get("/app/").headers["Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256(importmap).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in policy


def test_root_and_bare_path_lead_to_the_app(make_app: Callable[..., Flask], web_dir: Path) -> None:
    client = make_app(web_dir=web_dir).test_client()
    assert client.get("/").headers["Location"] == "/app/"
    assert client.get("/app").headers["Location"] == "/app/"


def test_files_are_served_with_module_script_types_and_a_strict_policy(
    make_app: Callable[..., Flask], web_dir: Path
) -> None:
    client = make_app(web_dir=web_dir).test_client()
    page = client.get("/app/")
    assert page.status_code == 200 and b"<title>chatmq</title>" in page.data
    assert page.mimetype == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    for path in ("/app/main.js", "/app/lib/worker.js"):
        script = client.get(path)
        assert script.status_code == 200
        assert script.mimetype == "text/javascript", "browsers refuse module scripts of other types"
    assert client.get("/app/style.css").mimetype == "text/css"
    etag = client.get("/app/main.js").headers["ETag"]
    assert client.get("/app/main.js", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("path", ["/app/nope.js", "/app/../secret.txt", "/app/%2e%2e/secret.txt", "/app/lib/"])
def test_nothing_outside_the_build_and_unknown_files_are_json_404(
    make_app: Callable[..., Flask], web_dir: Path, path: str
) -> None:
    response = make_app(web_dir=web_dir).test_client().get(path)
    assert_error(response, 404, "not_found")
    assert b"outside the build" not in response.data


def test_without_a_build_the_app_says_how_to_make_one(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    client = make_app(web_dir=tmp_path / "missing").test_client()
    assert "make web" in assert_error(client.get("/app/"), 503, "unavailable")["message"]
    assert client.get("/v1/conversations").status_code == 401, "the API works without the app"
    assert client.get("/app/config.json").status_code == 200


def test_config_tells_the_page_where_the_broker_is(make_app: Callable[..., Flask], web_dir: Path) -> None:
    config = make_app(web_dir=web_dir, ws_port=9083).test_client().get("/app/config.json").get_json()
    assert config == {"ws_url": None, "ws_port": 9083, "wss_port": None, "ws_path": "/mqtt", "api_url": "",
                      "heartbeat_interval_s": 30.0, "max_body_bytes": 4096}
    behind_proxy = make_app(web_dir=web_dir, ws_public_url="wss://chat.example.com/mqtt", ws_tls_port=8084)
    config = behind_proxy.test_client().get("/app/config.json").get_json()
    assert config["ws_url"] == "wss://chat.example.com/mqtt" and config["wss_port"] == 8084


def test_the_default_build_is_web_dist_of_this_checkout() -> None:
    assert default_web_dir() == Path(__file__).resolve().parents[2] / "web" / "dist"


def test_the_default_web_dir_is_this_checkouts_build() -> None:
    assert default_web_dir() == Path(__file__).resolve().parents[2] / "web" / "dist"
