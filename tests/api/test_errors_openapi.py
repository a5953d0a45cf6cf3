"""One JSON error shape for every failure, and the generated OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from chatmq.core.store import Store
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/conversations/c1/nope", "/openapi/", "/v2/conversations"])
def test_unknown_route_is_json_404(client: FlaskClient, path: str) -> None:
    assert assert_error(client.get(path), 404, "not_found")["message"] == f"no such route: GET {path}"


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.get("/v1/auth/token")
    message = assert_error(response, 405, "method_not_allowed")["message"]
    assert message == "GET is not allowed on /v1/auth/token; allowed: OPTIONS, POST"
    assert "POST" in response.headers["Allow"]
    assert_error(client.delete("/v1/conversations", headers=bearer("alice")), 405, "method_not_allowed")


def test_malformed_json_body(client: FlaskClient) -> None:
    response = client.post("/v1/auth/token", data='{"username": "alice",', content_type="application/json")
    assert assert_error(response, 400, "bad_request")["message"] == "request body is not valid JSON"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("[1, 2]", "application/json"), ('"alice"', "application/json"), ("username=alice", "text/plain"), ("", None)],
)
def test_body_that_is_not_a_json_object(client: FlaskClient, data: str, content_type: str | None) -> None:
    response = client.post("/v1/auth/token", data=data, content_type=content_type)
    assert "JSON object" in assert_error(response, 400, "bad_request")["message"]


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post("/v1/auth/token", json={"username": "a", "password": "x" * 300_000})
    assert assert_error(response, 413, "too_large")["message"] == "request body over 262144 bytes"


def test_unexpected_error_is_json_500_without_details(
    make_app: Callable[..., Flask], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(member: str | None = None) -> list[object]:
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(store, "list_conversations", explode)
    response = make_app().test_client().get("/v1/conversations", headers=bearer("alice"))
    assert_error(response, 500, "internal")
    text = response.get_data(as_text=True)
    assert "secret-internal-detail" not in text and "Traceback" not in text


def test_openapi_document_is_generated_and_valid(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    validate(doc)  # raises on anything that is not a valid OpenAPI 3 document
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert {p for p in paths if not p.startswith("/v1/admin/")} == {  # admin: tests/api/test_admin.py
        "/v1/auth/token",
        "/v1/auth/logout",
        "/v1/push/targets",
        "/v1/push/targets/{device}",
        "/v1/conversations/{conv}/mute",
        "/v1/conversations",
        "/v1/conversations/{conv}",
        "/v1/conversations/{conv}/messages",
        "/v1/conversations/{conv}/receipts",
        "/v1/conversations/{conv}/members",
        "/v1/conversations/{conv}/members/{user}",
        "/v1/presence/{user}",
        "/v1/me",
        "/v1/users",
        "/v1/users/{user}",
        "/v1/media",
        "/v1/media/{media_id}",
        "/v1/search",
        "/healthz",
        "/readyz",
    }
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path in ("/v1/conversations", "/v1/conversations/{conv}/messages", "/v1/presence/{user}"):
        assert paths[path]["get"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/v1/auth/token"]["post"]
    history = paths["/v1/conversations/{conv}/messages"]["get"]
    params = {p["name"]: p for p in history["parameters"]}
    assert set(params) == {"conv", "before", "after", "limit", "view"}
    assert params["view"]["schema"]["enum"] == ["entries", "messages"]
    assert params["limit"]["schema"]["maximum"] == 200
    assert history["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "MessagesResponse" in doc["components"]["schemas"]
