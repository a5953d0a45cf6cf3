"""The chatmq HTTP API as the client needs it: a token, conversations and history pages (urllib only)."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

_REFRESH_MARGIN_MS = 60_000


class ApiError(RuntimeError):
    """A non-2xx answer (``status`` > 0) or no answer at all (``status`` == 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else f"API unreachable: {message}")
        self.status, self.code, self.message = status, code, message


class HistoryClient:
    """Logs in with the password (and again when the token nears expiry), or uses a given token."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if password is None and token is None:
            raise ValueError("a password or a token is needed")
        self.base_url = base_url.rstrip("/")
        self.user, self._password = user, password
        self._token, self._expires_at = token, 0 if token is None else None
        self.timeout, self._tls = timeout, tls
        self._lock = threading.Lock()

    # --- endpoints ----------------------------------------------------------------------------
    def token(self) -> str:
        with self._lock:
            stale = self._expires_at is not None and self._expires_at - _REFRESH_MARGIN_MS < time.time() * 1000
            if self._token is None or (stale and self._password is not None):
                body = self._request("POST", "/v1/auth/token", {"username": self.user, "password": self._password})
                self._token, self._expires_at = str(body["token"]), int(body["expires_at"])
            return self._token

    def conversations(self) -> list[dict[str, Any]]:
        return list(self._get("/v1/conversations")["conversations"])

    def messages(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in ascending seq, and whether more exist in the direction asked."""
        query: dict[str, int] = {"limit": limit}
        if after is not None:
            query["after"] = after
        if before is not None:
            query["before"] = before
        body = self._get(f"/v1/conversations/{urllib.parse.quote(conv)}/messages?{urllib.parse.urlencode(query)}")
        return list(body["messages"]), bool(body["has_more"])

    def last_seq(self, conv: str) -> int:
        messages, _ = self.messages(conv, limit=1)
        return int(messages[-1]["seq"]) if messages else 0

    def presence(self, user: str) -> dict[str, Any]:
        return dict(self._get(f"/v1/presence/{urllib.parse.quote(user)}"))

    # --- plumbing -----------------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        try:
            return self._request("GET", path, token=self.token())
        except ApiError as exc:
            if exc.status != 401 or self._password is None:
                raise
            with self._lock:
                self._token = None  # expired or the key rotated: log in again once
            return self._request("GET", path, token=self.token())

    def _request(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                error = json.loads(raw)["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", raw.decode(errors="replace")[:200] or str(exc.reason)
            raise ApiError(exc.code, code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, "unreachable", str(getattr(exc, "reason", exc))) from None
