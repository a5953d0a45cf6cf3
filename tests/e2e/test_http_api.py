"""The HTTP API served by the real stack: errors and walking history by cursor."""

from __future__ import annotations

from collections.abc import Callable

from tests.stack import Stack


def test_errors_are_json_with_code_and_message(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, carol, conv = unique("alice"), unique("carol"), unique("conv")
    stack.add_user(alice)
    stack.add_user(carol)
    stack.create_conv(conv, alice)
    token = stack.token(alice)
    cases = [
        ("POST", "/v1/auth/token", None, {"username": alice, "password": "nope"}, 401),
        ("GET", f"/v1/conversations/{conv}/messages", None, None, 401),
        ("GET", f"/v1/conversations/{conv}/messages", "not-a-token", None, 401),
        ("GET", f"/v1/conversations/{conv}/messages", stack.token(carol), None, 403),
        ("GET", "/v1/conversations/no-such-conv/messages", token, None, 404),
        ("GET", f"/v1/conversations/{conv}/messages?limit=0", token, None, 400),
        ("GET", f"/v1/conversations/{conv}/messages?limit=201", token, None, 400),
        ("GET", f"/v1/conversations/{conv}/messages?before=abc", token, None, 400),
        ("GET", f"/v1/conversations/{conv}/messages?before=5&after=1", token, None, 400),
        ("GET", "/v1/no-such-route", token, None, 404),
    ]
    for method, path, bearer, body, expected in cases:
        status, payload = stack.http(method, path, token=bearer, body=body)
        assert status == expected, (path, payload)
        assert set(payload["error"]) == {"code", "message"}, payload


def test_history_walks_whole_log_both_ways(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, conv = unique("alice"), unique("conv")
    stack.add_user(alice)
    stack.create_conv(conv, alice)
    with stack.client(alice) as a:
        futures = [a.send(conv, f"m{i}") for i in range(120)]
        assert sorted(f.result(30).seq for f in futures) == list(range(1, 121))
    token = stack.token(alice)

    backwards: list[int] = []
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?limit=25", token=token)
    while True:
        assert status == 200
        backwards = [m["seq"] for m in page["messages"]] + backwards
        if not page["has_more"]:
            break
        oldest = page["messages"][0]["seq"]
        status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?limit=25&before={oldest}", token=token)
    assert backwards == list(range(1, 121))

    forwards: list[int] = []
    cursor = 0
    while True:
        status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?limit=33&after={cursor}", token=token)
        assert status == 200
        forwards += [m["seq"] for m in page["messages"]]
        if not page["has_more"]:
            break
        cursor = forwards[-1]
    assert forwards == list(range(1, 121))

    status, listing = stack.http("GET", "/v1/conversations", token=token)
    assert status == 200
    assert {c["id"]: c["last_seq"] for c in listing["conversations"]}[conv] == 120


def test_readyz_reports_all_components(stack: Stack) -> None:
    assert stack.http("GET", "/healthz") == (200, {"status": "ok"})
    status, body = stack.http("GET", "/readyz")
    assert status == 200
    assert body["checks"] == {"store": "ok", "redis": "ok", "broker": "ok", "bridge": "ok"}


def test_openapi_document_is_served(stack: Stack) -> None:
    status, doc = stack.http("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert "/v1/conversations/{conv}/messages" in doc["paths"]
