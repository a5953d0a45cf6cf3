"""Bad HTTP input, endpoint by endpoint: each case gets a clear 4xx in the one error shape, the
service stays healthy, and nothing is stored or changed."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from chatmq.core.store import Store
from tests.api.helpers import bearer

NE = {"$ne": None}
DEEP = {"data": b"[" * 100_000 + b"]" * 100_000, "content_type": "application/json"}  # nesting bomb

# (method, path, request kwargs, acceptable statuses)
CASES: list[tuple[str, str, dict[str, Any], set[int]]] = [
    # --- POST /v1/auth/token -------------------------------------------------------------
    ("POST", "/v1/auth/token", {"json": {"username": "alice", "password": NE}}, {400}),
    ("POST", "/v1/auth/token", {"json": {"username": NE, "password": "alice-pw"}}, {400}),
    ("POST", "/v1/auth/token", {"json": {"username": {"$gt": ""}, "password": {"$gt": ""}}}, {400}),
    ("POST", "/v1/auth/token", {"json": {"username": "alice", "password": 12345}}, {400}),
    ("POST", "/v1/auth/token", {"json": {"username": "alice", "password": ["alice-pw"]}}, {400}),
    ("POST", "/v1/auth/token", {"json": ["alice", "alice-pw"]}, {400}),
    ("POST", "/v1/auth/token", {"json": {"username": "alice", "password": "alice-pw", "admin": True}}, {400}),
    ("POST", "/v1/auth/token", {"data": b"\xff\xfe{not json", "content_type": "application/json"}, {400}),
    ("POST", "/v1/auth/token", {"data": "username=alice&password=alice-pw"}, {400, 415}),
    ("POST", "/v1/auth/token", {"json": {"username": "alice", "password": "x" * 100_000}}, {400, 413}),
    ("POST", "/v1/auth/token", {"json": {"username": "alice\x00", "password": "alice-pw"}}, {401}),
    ("POST", "/v1/auth/token", {"json": {"username": "../../etc/passwd", "password": "x"}}, {401}),
    ("POST", "/v1/auth/token", {"json": {"username": "@bridge", "password": "x"}}, {401}),
    ("POST", "/v1/auth/token", DEEP, {400}),
    # --- GET /v1/conversations/<conv>/messages ----------------------------------------
    ("GET", "/v1/conversations/c1/messages?limit=-1", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?limit=0", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?limit=99999999999999999999999", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?limit=abc", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?before=-5", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?after=-1", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?after=1e309", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?after[$ne]=null", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?limit[$gt]=0", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?before=3&after=1", {}, {400}),
    # past the stores' signed 64-bit seqs: 400, never an overflow (was a 500)
    ("GET", f"/v1/conversations/c1/messages?after={2**63}", {}, {400}),
    ("GET", f"/v1/conversations/c1/messages?before={2**63}", {}, {400}),
    ("GET", f"/v1/conversations/c1/messages?after={2**64 + 1}", {}, {400}),
    ("GET", "/v1/conversations/c1/messages?sort=-seq", {}, {400}),
    ("GET", "/v1/conversations/c2/messages", {}, {403}),  # alice+carol only
    ("GET", "/v1/conversations/..%2F..%2Fetc%2Fpasswd/messages", {}, {404}),
    ("GET", "/v1/conversations/c1%00/messages", {}, {404}),
    ("GET", "/v1/conversations/%24ne/messages", {}, {404}),
    ("GET", "/v1/conversations/%2B/messages", {}, {404}),
    ("GET", "/v1/conversations/%23/messages", {}, {404}),
    ("GET", "/v1/conversations/" + "a" * 5000, {}, {404}),
    # --- receipts / one conversation ---------------------------------------------------
    ("GET", "/v1/conversations/c2/receipts", {}, {403}),
    ("GET", "/v1/conversations/%2e%2e/receipts", {}, {404}),
    ("GET", "/v1/conversations/c2", {}, {403}),
    # --- POST /v1/conversations ----------------------------------------------------------
    ("POST", "/v1/conversations", {"json": {"members": NE}}, {400}),
    # dot segments: an HTTP client rewrites /v1/conversations/../messages, so no such id may exist
    ("POST", "/v1/conversations", {"json": {"id": ".", "members": ["alice"]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"id": "..", "members": ["alice"]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice", ".."]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": [NE]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": "alice"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "a/b"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "+"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "#"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "$sys"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "../x"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": NE}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["nobody"]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice/x"]}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "title": "t" * 10_000}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "title": 7}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "owner": "bob"}}, {400}),
    ("POST", "/v1/conversations", {"json": {"members": ["alice"], "id": "c1"}}, {409}),
    ("POST", "/v1/conversations", DEEP, {400}),
    # --- members / title -------------------------------------------------------------------
    ("POST", "/v1/conversations/c1/members", {"json": {"user": NE}}, {400}),
    ("POST", "/v1/conversations/c1/members", {"json": {"user": "erin", "$set": {"owner": "x"}}}, {400}),
    ("POST", "/v1/conversations/c1/members", {"json": {"user": "+"}}, {400, 403}),
    ("POST", "/v1/conversations/c2/members", {"json": {"user": "erin"}}, {403}),
    ("DELETE", "/v1/conversations/c1/members/%23", {}, {403, 404}),
    ("DELETE", "/v1/conversations/c2/members/carol", {}, {403}),
    ("PATCH", "/v1/conversations/c1", {"json": {"title": NE}}, {400}),
    ("PATCH", "/v1/conversations/c1", {"json": {"title": ["x"]}}, {400}),
    ("PATCH", "/v1/conversations/c2", {"json": {"title": "mine now"}}, {403}),
    # --- presence ---------------------------------------------------------------------------
    ("GET", "/v1/presence/..%2F..", {}, {400, 403, 404}),
    ("GET", "/v1/presence/%2B", {}, {400, 403, 404}),
    ("GET", "/v1/presence/a%2Fb", {}, {400, 403, 404}),
    # --- media --------------------------------------------------------------------------------
    ("GET", "/v1/media/..%2F..%2Fchatmq.db", {}, {400, 403, 404}),
    ("GET", "/v1/media/../../secret.key", {}, {400, 403, 404}),
    ("GET", "/v1/media/%2e%2e%2fsecret.key", {}, {400, 403, 404}),
    ("GET", "/v1/media/secret.key%00.png", {}, {400, 403, 404}),
    ("POST", "/v1/media", {"json": {"file": NE}}, {400, 415}),
    ("POST", "/v1/media", {"data": b"\x00" * 10}, {400, 415}),
]


def _ids() -> list[str]:
    return [f"{m} {p[:60]} #{i}" for i, (m, p, _, _) in enumerate(CASES)]


def _snapshot(store: Store) -> tuple[Any, ...]:
    convs = tuple(sorted((c.id, c.title, c.owner, tuple(sorted(c.members)), c.last_seq)
                         for c in store.list_conversations()))
    users = tuple(sorted((u.id, u.disabled) for u in store.list_users()))
    return convs, users


@pytest.mark.parametrize(("method", "path", "kwargs", "allowed"), CASES, ids=_ids())
def test_bad_http_input_is_refused_cleanly(
    client: FlaskClient, store: Store, method: str, path: str, kwargs: dict[str, Any], allowed: set[int]
) -> None:
    before = _snapshot(store)
    headers = {} if path.startswith("/v1/auth/") else bearer("bob")  # bob: c1 only, owns nothing
    response = client.open(path, method=method, headers=headers, **kwargs)
    assert response.status_code in allowed, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json(silent=True)
    assert isinstance(body, dict) and set(body) == {"error"}, response.get_data(as_text=True)[:300]
    assert isinstance(body["error"].get("code"), str) and body["error"].get("message")
    assert "Traceback" not in response.get_data(as_text=True)
    assert _snapshot(store) == before  # nothing stored, nothing changed
    assert client.get("/healthz").status_code == 200  # still serving


@pytest.mark.parametrize("token", ["", "Bearer", "Bearer x", "Bearer " + "a" * 20_000, "Basic YWxpY2U6YWxpY2UtcHc=",
                                   'Bearer {"$ne": null}', "Bearer ../../secret.key"])
def test_bad_credentials_on_every_protected_route_are_401(client: FlaskClient, token: str) -> None:
    for path in ("/v1/conversations", "/v1/conversations/c1/messages", "/v1/presence/bob"):
        response = client.get(path, headers={"Authorization": token})
        assert response.status_code == 401, (path, response.get_data(as_text=True)[:200])
        assert response.get_json()["error"]["code"]
