"""Helpers shared by the API tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chatmq.core.auth import issue_token

SECRET = "api-test-secret-of-at-least-32-bytes-long"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw", "erin": "erin-pw"}


def api_env(data_dir: Path, port: int, redis_url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``python -m chatmq.api`` on 127.0.0.1:``port``; ``settings``: more CHATMQ_* values."""
    return {
        **os.environ,
        "CHATMQ_DATA_DIR": str(data_dir),
        "CHATMQ_HTTP_PORT": str(port),
        "CHATMQ_HOST": "127.0.0.1",
        "CHATMQ_REDIS_URL": redis_url,
        "CHATMQ_SECRET_KEY": SECRET,
        **settings,
    }


def bearer(user: str, *, ttl_s: int = 3600, secret: str = SECRET, service: bool = False) -> dict[str, str]:
    token = issue_token(secret, user, ttl_s, service=service).token
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]
