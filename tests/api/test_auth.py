"""POST /v1/auth/token and bearer-token checks on the protected routes."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from chatmq.core.auth import verify_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.store import Store
from tests.api.helpers import SECRET, assert_error, bearer

pytestmark = pytest.mark.timeout(30)


def test_token_issued_for_valid_credentials_and_accepted(client: FlaskClient) -> None:
    before_ms = int(time.time() * 1000)
    response = client.post("/v1/auth/token", json={"username": "alice", "password": "alice-pw"})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"token", "expires_at"}
    identity = verify_token(SECRET, body["token"])
    assert identity is not None and identity.user == "alice" and not identity.is_service
    # Default TTL is 24 h, expressed in ms since epoch.
    assert before_ms + 24 * 3600 * 1000 - 2000 <= body["expires_at"] <= before_ms + 24 * 3600 * 1000 + 2000

    listed = client.get("/v1/conversations", headers={"Authorization": f"Bearer {body['token']}"})
    assert listed.status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("nobody", "alice-pw"), ("dave", "dave-pw"), ("", ""), (SERVICE_USER, "x")],
    ids=["wrong-password", "unknown-user", "disabled-user", "empty", "service-user"],
)
def test_token_refused_with_one_answer(client: FlaskClient, username: str, password: str) -> None:
    response = client.post("/v1/auth/token", json={"username": username, "password": password})
    error = assert_error(response, 401, "invalid_credentials")
    assert error["message"] == "invalid username or password"


def test_token_cannot_renew_itself(client: FlaskClient) -> None:
    token = bearer("alice")["Authorization"].removeprefix("Bearer ")
    response = client.post("/v1/auth/token", json={"username": "alice", "password": token})
    assert_error(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [{"username": "alice"}, {"username": "alice", "password": 123}, {"username": "a", "password": "b", "x": 1}],
    ids=["missing-field", "wrong-type", "unknown-field"],
)
def test_token_request_validation(client: FlaskClient, body: dict[str, object]) -> None:
    assert_error(client.post("/v1/auth/token", json=body), 400, "bad_request")


def test_token_ttl_follows_settings(make_app, store: Store) -> None:  # type: ignore[no-untyped-def]
    client = make_app(token_ttl_s=60).test_client()
    now_ms = int(time.time() * 1000)
    body = client.post("/v1/auth/token", json={"username": "bob", "password": "bob-pw"}).get_json()
    assert now_ms + 58_000 <= body["expires_at"] <= now_ms + 62_000


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6YWxpY2UtcHc="},
        {"Authorization": "Bearer not-a-token"},
        bearer("alice", secret="some-other-secret-also-32-bytes-or-longer"),
        bearer("alice", ttl_s=-5),
        bearer("dave"),
        bearer("ghost"),
        bearer(SERVICE_USER, service=True),
    ],
    ids=["missing", "empty", "basic", "garbage", "wrong-key", "expired", "disabled", "unknown-user", "service"],
)
@pytest.mark.parametrize("path", ["/v1/conversations", "/v1/conversations/c1/messages", "/v1/presence/alice"])
def test_protected_routes_need_a_valid_token(client: FlaskClient, headers: dict[str, str], path: str) -> None:
    assert_error(client.get(path, headers=headers), 401, "unauthorized")


def test_unauthorized_comes_before_parameter_errors(client: FlaskClient) -> None:
    assert_error(client.get("/v1/conversations/c1/messages?limit=abc"), 401, "unauthorized")


def test_disabling_a_user_revokes_their_tokens(client: FlaskClient, store: Store) -> None:
    headers = bearer("bob")
    assert client.get("/v1/conversations", headers=headers).status_code == 200
    store.set_disabled("bob", True)
    assert_error(client.get("/v1/conversations", headers=headers), 401, "unauthorized")
