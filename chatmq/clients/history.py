"""History as the client needs it: over the HTTP API (a token, conversations, history pages, search
and receipts; urllib only), or the same pages and searches over the MQTT connection
(``MqttHistory``)."""

from __future__ import annotations

import abc
import itertools
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import orjson

_REFRESH_MARGIN_MS = 60_000
_PROFILES_PER_REQUEST = 100  # GET /v1/users takes at most this many ids


class ApiError(RuntimeError):
    """A non-2xx answer (``status`` > 0) or no answer at all (``status`` == 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else f"API unreachable: {message}")
        self.status, self.code, self.message = status, code, message


class HistorySource(abc.ABC):
    """Where catch-up reads pages from: the HTTP API (``HistoryClient``) or the MQTT connection
    (``MqttHistory``). Both serve the same pages; the rest is written once, here."""

    @abc.abstractmethod
    def page(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 200,
        view: str = "entries",
    ) -> dict[str, Any]:  # fmt: skip
        """One history page: ``messages`` (ascending seq), ``has_more`` and ``last_seq``;
        ``view="messages"`` for messages as they stand now."""

    @abc.abstractmethod
    def search(
        self, q: str, *, conv: str | None = None, sender: str | None = None, before: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:  # fmt: skip
        """One page of search results over the user's conversations: ``results`` (messages as they
        stand now, newest first) and ``next`` (pass as ``before`` for older ones; None: no more)."""

    def messages(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of entries in ascending seq, and whether more exist in the direction asked."""
        body = self.page(conv, after=after, before=before, limit=limit)
        return list(body["messages"]), bool(body["has_more"])

    def last_seq(self, conv: str) -> int:
        return int(self.page(conv, limit=1).get("last_seq") or 0)


class HistoryClient(HistorySource):
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

    def page(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 200,
        view: str = "entries",
    ) -> dict[str, Any]:  # fmt: skip
        query = _cursor(after, before, limit, view)
        return dict(self._get(f"/v1/conversations/{urllib.parse.quote(conv)}/messages?{urllib.parse.urlencode(query)}"))

    def search(
        self, q: str, *, conv: str | None = None, sender: str | None = None, before: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:  # fmt: skip
        return dict(self._get(f"/v1/search?{urllib.parse.urlencode(_search_params(q, conv, sender, before, limit))}"))

    def receipts(self, conv: str) -> list[dict[str, Any]]:
        """Every member's delivered and read markers."""
        return list(self._get(f"/v1/conversations/{urllib.parse.quote(conv)}/receipts")["receipts"])

    def presence(self, user: str) -> dict[str, Any]:
        return dict(self._get(f"/v1/presence/{urllib.parse.quote(user)}"))

    def users(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The profiles (``id``, ``display_name``, ``avatar_url``) of those of ``ids`` the caller may
        see (itself and the members of its conversations), in requests of at most 100."""
        wanted = sorted(set(ids))
        profiles: list[dict[str, Any]] = []
        for start in range(0, len(wanted), _PROFILES_PER_REQUEST):
            query = urllib.parse.urlencode([("id", user) for user in wanted[start:start + _PROFILES_PER_REQUEST]])
            profiles += self._get(f"/v1/users?{query}")["users"]
        return profiles

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


class MqttHistory(HistorySource):
    """History pages over the MQTT connection (``user/{me}/history/request`` -> ``.../response``),
    for devices without HTTP; the same pages and errors as ``HistoryClient``. ``publish`` puts a
    request on the wire (False when not connected); the client routes responses to ``answered``.
    Blocking calls wait for their response, so call them off the MQTT network thread."""

    def __init__(self, publish: Callable[[bytes], bool], timeout: float = 10.0) -> None:
        self._publish = publish
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._prefix = f"h{time.monotonic_ns() % 1_000_000}-"
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[dict[str, Any]]] = {}

    def page(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 200,
        view: str = "entries",
    ) -> dict[str, Any]:  # fmt: skip
        return self._ask({"conv": conv, **_cursor(after, before, limit, view)})

    def search(
        self, q: str, *, conv: str | None = None, sender: str | None = None, before: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:  # fmt: skip
        return self._ask(_search_params(q, conv, sender, before, limit))

    def _ask(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Publish one request and wait for its response; a refusal raises ApiError."""
        request = {"id": f"{self._prefix}{next(self._ids)}", **fields}
        answer: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[request["id"]] = answer
        try:
            if not self._publish(orjson.dumps(request)):
                raise ApiError(0, "unreachable", "not connected")
            try:
                reply = answer.result(self.timeout)
            except FutureTimeout:
                raise ApiError(0, "unreachable", f"no history response within {self.timeout:g} s") from None
        finally:
            with self._lock:
                self._waiting.pop(request["id"], None)
        if reply.get("status") != "ok":
            error = reply.get("error") or {}
            code = str(error.get("code"))
            raise ApiError(_STATUS_OF.get(code, 400), code, str(error.get("message")))
        return reply

    def answered(self, reply: dict[str, Any]) -> None:
        """A response arrived (other devices' responses to the same user are not ours: ignored)."""
        with self._lock:
            waiting = self._waiting.get(str(reply.get("id")))
        if waiting is not None and not waiting.done():
            waiting.set_result(reply)


def _cursor(after: int | None, before: int | None, limit: int, view: str) -> dict[str, Any]:
    """A page's parameters, as the HTTP query and the MQTT request both name them."""
    given = {"after": after, "before": before, "limit": limit, "view": None if view == "entries" else view}
    return {name: value for name, value in given.items() if value is not None}


def _search_params(q: str, conv: str | None, sender: str | None, before: str | None, limit: int) -> dict[str, Any]:
    given = {"q": q, "conv": conv, "sender": sender, "before": before, "limit": limit}
    return {name: value for name, value in given.items() if value is not None}


_STATUS_OF = {"bad_request": 400, "forbidden": 403, "not_found": 404, "rate_limited": 429, "internal": 500}
