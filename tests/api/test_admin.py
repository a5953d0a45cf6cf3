"""The admin HTTP API: who may call it (every route, enumerated from the app's URL map), and what
each operation does to the store, tokens and the broker."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import ADMIN_USER
from chatmq.core.store import Store
from tests.api.helpers import SECRET, assert_error, bearer

pytestmark = pytest.mark.timeout(60)

ADMIN_PREFIX = "/v1/admin"


def admin_headers(ttl_s: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, ADMIN_USER, ttl_s, admin=True).token}"}


def admin_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, url) of every route under /v1/admin and of every route of the admin blueprint,
    with placeholder values for the path variables."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith(ADMIN_PREFIX) or rule.endpoint.startswith("admin.")):
            continue
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: {"conv": "c1", "seq": "1", "webhook": "w1"}.get(m[1], "bob"),
                     rule.rule)
        routes += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def call(client: FlaskClient, method: str, url: str, headers: dict[str, str] | None = None,
         body: Any = None) -> Any:
    return client.open(url, method=method, headers=headers or {},
                       json=body if method in ("POST", "PATCH", "PUT") else None)


def test_every_admin_route_refuses_a_users_token_with_403(app: Flask, client: FlaskClient, store: Store) -> None:
    routes = admin_routes(app)
    assert len(routes) >= 20, routes  # the enumeration itself works (a new route is included by itself)
    assert all(url.startswith(ADMIN_PREFIX) for _, url in routes), "admin routes live under /v1/admin"
    before = (sorted((u.id, u.disabled, u.display_name) for u in store.list_users()),
              [(c.id, c.members, c.title) for c in store.list_conversations()])
    for method, url in routes:
        for body in (None, {"id": "mallory", "user": "alice", "members": ["alice"], "admin": True}):
            response = call(client, method, url, bearer("alice"), body)
            assert_error(response, 403, "forbidden")
            assert_error(call(client, method, url, None, body), 401, "unauthorized")
            assert_error(call(client, method, url, {"Authorization": "Bearer not.a.token"}, body), 401, "unauthorized")
            assert_error(call(client, method, url, bearer("alice", service=True), body), 403, "forbidden")
    after = (sorted((u.id, u.disabled, u.display_name) for u in store.list_users()),
             [(c.id, c.members, c.title) for c in store.list_conversations()])
    assert after == before  # nothing was changed by the refused calls


def test_openapi_describes_the_admin_routes(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    for method, url in admin_routes(app):
        path = re.sub(r"/(bob|c1|1|w1)(?=/|$)",
                      lambda m: {"bob": "/{user}", "c1": "/{conv}", "1": "/{seq}", "w1": "/{webhook}"}[m[1]], url)
        assert (method, path) in documented, (method, path)
        assert doc["paths"][path][method.lower()]["security"] == [{"bearer": []}]


def test_expired_or_revoked_admin_tokens_are_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    expired = {"Authorization": f"Bearer {issue_token(SECRET, ADMIN_USER, -10, admin=True).token}"}
    assert_error(client.get(f"{ADMIN_PREFIX}/users", headers=expired), 401, "unauthorized")
    headers = admin_headers()
    token = headers["Authorization"].split()[1]
    assert client.get(f"{ADMIN_PREFIX}/users", headers=headers).status_code == 200
    assert client.post(f"{ADMIN_PREFIX}/tokens/revoke", json={"token": token}, headers=headers).status_code == 200
    assert_error(client.get(f"{ADMIN_PREFIX}/users", headers=headers), 401, "unauthorized")


def test_users_create_page_change_and_delete(client: FlaskClient, store: Store) -> None:
    h = admin_headers()
    made = client.post(f"{ADMIN_PREFIX}/users", json={"id": "zoe", "password": "zoe-pw", "display_name": "Zoë"},
                       headers=h)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["display_name"] == "Zoë" and made.get_json()["has_password"]
    assert_error(client.post(f"{ADMIN_PREFIX}/users", json={"id": "zoe"}, headers=h), 409, "conflict")
    assert_error(client.post(f"{ADMIN_PREFIX}/users", json={"id": "a/b"}, headers=h), 400, "bad_request")
    assert_error(client.post(f"{ADMIN_PREFIX}/users", json={"id": "y", "password_hash": "plain"}, headers=h),
                 400, "bad_request")
    hashed = client.post(f"{ADMIN_PREFIX}/users", json={"id": "yan", "password_hash": hash_password("yan-pw")},
                         headers=h)
    assert hashed.status_code == 201
    assert client.post("/v1/auth/token", json={"username": "yan", "password": "yan-pw"}).status_code == 200
    assert client.post(f"{ADMIN_PREFIX}/users", json={"id": "xavi"}, headers=h).get_json()["has_password"] is False

    ids: list[str] = []
    after = None
    while True:
        page = client.get(f"{ADMIN_PREFIX}/users", query_string={"limit": 3, **({"after": after} if after else {})},
                          headers=h).get_json()
        ids += [u["id"] for u in page["users"]]
        after = page["next"]
        if after is None:
            break
    assert ids == sorted(u.id for u in store.list_users()) and len(ids) == 8
    assert_error(client.get(f"{ADMIN_PREFIX}/users?limit=0", headers=h), 400, "bad_request")

    token = client.post("/v1/auth/token", json={"username": "zoe", "password": "zoe-pw"}).get_json()["token"]
    changed = client.patch(f"{ADMIN_PREFIX}/users/zoe", json={"display_name": None, "disabled": True}, headers=h)
    assert changed.get_json()["display_name"] is None and changed.get_json()["disabled"] is True
    assert client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    client.patch(f"{ADMIN_PREFIX}/users/zoe", json={"disabled": False, "password": "new-pw"}, headers=h)
    assert client.post("/v1/auth/token", json={"username": "zoe", "password": "new-pw"}).status_code == 200
    assert_error(client.patch(f"{ADMIN_PREFIX}/users/ghost", json={"disabled": True}, headers=h), 404, "not_found")

    token = client.post("/v1/auth/token", json={"username": "zoe", "password": "new-pw"}).get_json()["token"]
    gone = client.delete(f"{ADMIN_PREFIX}/users/zoe", headers=h).get_json()
    assert gone == {"id": "zoe", "disabled": True, "tokens_revoked": True, "erased": True, "messages_erased": 0,
                    "reactions_erased": 0, "conversations_left": []}
    assert client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert store.get_user("zoe").disabled  # type: ignore[union-attr]
    assert client.post("/v1/auth/token", json={"username": "zoe", "password": "new-pw"}).status_code == 401


def test_import_users_is_idempotent_and_reports_bad_rows(client: FlaskClient, store: Store) -> None:
    h = admin_headers()
    rows = [
        {"id": "imp1", "password_hash": hash_password("pw1"), "display_name": "One"},
        {"id": "imp2"},
        {"id": "bad id"},
        {"id": "imp3", "password_hash": "not-argon2"},
        {"id": "imp4", "password": "plain-pw"},
        {"id": "imp5", "colour": "blue"},
        "not an object",
        {"id": "alice"},  # exists already
    ]
    report = client.post(f"{ADMIN_PREFIX}/users/import", json={"users": rows}, headers=h).get_json()
    assert (report["created"], report["existing"]) == (3, 1)
    assert [e["index"] for e in report["errors"]] == [2, 3, 5, 6]
    assert "not a valid user id" in report["errors"][0]["error"] and "argon2" in report["errors"][1]["error"]
    assert client.post("/v1/auth/token", json={"username": "imp4", "password": "plain-pw"}).status_code == 200
    again = client.post(f"{ADMIN_PREFIX}/users/import", json={"users": rows}, headers=h).get_json()
    assert (again["created"], again["existing"], len(again["errors"])) == (0, 4, 4)
    too_many = client.post(f"{ADMIN_PREFIX}/users/import", json={"users": [{"id": f"u{n}"} for n in range(1001)]},
                           headers=h)
    assert_error(too_many, 400, "bad_request")


def test_conversations_and_members(client: FlaskClient, store: Store) -> None:
    h = admin_headers()
    made = client.post(f"{ADMIN_PREFIX}/conversations", json={"id": "ops", "members": ["bob", "alice"],
                                                              "title": "Ops"}, headers=h)
    assert made.status_code == 201 and made.get_json()["members"] == ["alice", "bob"]
    assert made.get_json()["owner"] is None
    assert_error(client.post(f"{ADMIN_PREFIX}/conversations", json={"id": "x", "members": ["ghost"]}, headers=h),
                 400, "bad_request")
    assert client.post(f"{ADMIN_PREFIX}/conversations/ops/members", json={"user": "carol"},
                       headers=h).get_json()["members"] == ["alice", "bob", "carol"]
    assert_error(client.post(f"{ADMIN_PREFIX}/conversations/ops/members", json={"user": "carol"}, headers=h),
                 409, "conflict")
    assert client.delete(f"{ADMIN_PREFIX}/conversations/ops/members/bob",
                         headers=h).get_json()["members"] == ["alice", "carol"]
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/ops/members/bob", headers=h), 404, "not_found")
    renamed = client.patch(f"{ADMIN_PREFIX}/conversations/ops", json={"title": None}, headers=h).get_json()
    assert renamed["title"] is None
    page = client.get(f"{ADMIN_PREFIX}/conversations?limit=2", headers=h).get_json()
    assert [c["id"] for c in page["conversations"]] == ["c1", "c2"] and page["next"] == "c2"
    mine = client.get(f"{ADMIN_PREFIX}/conversations?member=carol", headers=h).get_json()
    assert [c["id"] for c in mine["conversations"]] == ["c2", "ops"]
    assert client.get(f"{ADMIN_PREFIX}/conversations/ops/messages", headers=h).get_json() == {
        "messages": [], "has_more": False, "first_seq": 1}

    rows = [{"id": "team", "members": ["alice", "bob"], "title": "Team"}, {"id": "ops", "members": ["erin"]},
            {"id": "c1", "members": ["alice"]}, {"id": "nope", "members": ["ghost"]}, {"id": "empty", "members": []}]
    report = client.post(f"{ADMIN_PREFIX}/conversations/import", json={"conversations": rows}, headers=h).get_json()
    assert (report["created"], report["updated"], report["existing"]) == (1, 1, 1)
    assert [e["index"] for e in report["errors"]] == [3, 4] and "ghost" in report["errors"][0]["error"]
    assert store.get_conversation("ops").members == ("alice", "carol", "erin")  # type: ignore[union-attr]
    again = client.post(f"{ADMIN_PREFIX}/conversations/import", json={"conversations": rows}, headers=h).get_json()
    assert (again["created"], again["updated"], again["existing"]) == (0, 0, 3)


def test_tokens_issue_and_revoke(client: FlaskClient) -> None:
    h = admin_headers()
    issued = client.post(f"{ADMIN_PREFIX}/tokens", json={"user": "bob", "ttl_s": 120}, headers=h)
    assert issued.status_code == 201
    token = issued.get_json()["token"]
    assert client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert_error(client.post(f"{ADMIN_PREFIX}/tokens", json={"user": "dave"}, headers=h), 409, "conflict")  # disabled
    assert_error(client.post(f"{ADMIN_PREFIX}/tokens", json={"user": "ghost"}, headers=h), 404, "not_found")
    assert client.post(f"{ADMIN_PREFIX}/tokens/revoke", json={"user": "bob"}, headers=h).get_json() == {
        "user": "bob", "revoked": "all"}
    assert client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    admin = client.post(f"{ADMIN_PREFIX}/tokens", json={"admin": True}, headers=h).get_json()
    assert admin["user"] == ADMIN_USER
    assert client.get(f"{ADMIN_PREFIX}/stats", headers={"Authorization": f"Bearer {admin['token']}"}).status_code == 200
    # an admin token opens no user route
    assert_error(client.get("/v1/conversations", headers={"Authorization": f"Bearer {admin['token']}"}),
                 401, "unauthorized")


def test_broker_routes_say_when_the_broker_cannot_be_asked(client: FlaskClient) -> None:
    h = admin_headers()  # the settings fixture points at a port where nothing listens
    assert_error(client.get(f"{ADMIN_PREFIX}/clients", headers=h), 503, "unavailable")
    assert_error(client.post(f"{ADMIN_PREFIX}/kick", json={"user": "alice"}, headers=h), 503, "unavailable")
    stats = client.get(f"{ADMIN_PREFIX}/stats", headers=h).get_json()
    assert stats["users"] == 5 and stats["conversations"] == 2 and "not reachable" in stats["broker"]["error"]


def test_webhooks_and_the_delivery_log(client: FlaskClient, store: Store) -> None:
    from chatmq.core.store.base import DELIVERY_DEAD, DELIVERY_PUSH, DELIVERY_WEBHOOK, Attempt, Delivery

    headers = admin_headers()
    created = client.post(f"{ADMIN_PREFIX}/webhooks", headers=headers,
                          json={"id": "crm", "url": "https://crm.example/hook", "events": ["message.created"]})
    assert created.status_code == 201, created.get_json()
    hook = created.get_json()
    assert hook["events"] == ["message.created"] and len(hook["secret"]) >= 16 and hook["created_at"] > 0
    assert store.webhooks()[0].secret == hook["secret"]  # what the notifier signs with
    assert_error(client.post(f"{ADMIN_PREFIX}/webhooks", headers=headers,
                             json={"id": "crm", "url": "https://x.example/"}), 409, "conflict")
    for bad in ({"id": "b", "url": "ftp://x"}, {"id": "b", "url": "https://x", "events": ["nope"]},
                {"id": "b", "url": "https://x", "events": []}, {"id": "b c", "url": "https://x"},
                {"id": "b", "url": "https://x", "secret": "short"}):
        assert_error(client.post(f"{ADMIN_PREFIX}/webhooks", headers=headers, json=bad), 400, "bad_request")
    everything = client.post(f"{ADMIN_PREFIX}/webhooks", headers=headers,
                             json={"id": "all", "url": "http://10.0.0.1/h", "secret": "s" * 20}).get_json()
    assert everything["secret"] == "s" * 20 and "member.added" in everything["events"]
    listed = client.get(f"{ADMIN_PREFIX}/webhooks", headers=headers).get_json()["webhooks"]
    assert [(h["id"], h.get("secret")) for h in listed] == [("all", None), ("crm", None)]  # secrets shown once

    store.add_deliveries([
        Delivery("w:crm:m:c1:1", DELIVERY_WEBHOOK, "crm", "crm:c1", {"id": "m:c1:1", "type": "message.created"}),
        Delivery("w:crm:m:c1:2", DELIVERY_WEBHOOK, "crm", "crm:c1", {"id": "m:c1:2", "type": "message.created"}),
        Delivery("p:bob/phone:c1:1", DELIVERY_PUSH, "bob/phone", "bob/phone:c1", {"seq": 1}),
    ])
    store.record_attempts([Attempt("w:crm:m:c1:1", 0, DELIVERY_DEAD, 0, "HTTP 500")])
    log = client.get(f"{ADMIN_PREFIX}/deliveries", headers=headers).get_json()["deliveries"]
    assert {d["id"] for d in log} == {"w:crm:m:c1:1", "w:crm:m:c1:2", "p:bob/phone:c1:1"}
    dead = client.get(f"{ADMIN_PREFIX}/deliveries?state=dead&channel=webhook&target=crm", headers=headers).get_json()
    assert [(d["id"], d["state"], d["last_error"], d["payload"]["type"]) for d in dead["deliveries"]] == [
        ("w:crm:m:c1:1", "dead", "HTTP 500", "message.created")]
    pushes = client.get(f"{ADMIN_PREFIX}/deliveries?channel=push", headers=headers).get_json()["deliveries"]
    assert [d["target"] for d in pushes] == ["bob/phone"]
    assert_error(client.get(f"{ADMIN_PREFIX}/deliveries?state=lost", headers=headers), 400, "bad_request")

    assert_error(client.post(f"{ADMIN_PREFIX}/deliveries/replay", headers=headers, json={}), 400, "bad_request")
    missing = client.post(f"{ADMIN_PREFIX}/deliveries/replay", headers=headers, json={"ids": ["w:crm:m:c1:1", "nope"]})
    assert_error(missing, 404, "not_found")
    assert "nope" in missing.get_json()["error"]["message"]
    assert store.get_delivery("w:crm:m:c1:1").state == DELIVERY_DEAD  # type: ignore[union-attr]  # all or nothing
    replayed = client.post(f"{ADMIN_PREFIX}/deliveries/replay", headers=headers,
                           json={"dead": True, "channel": "webhook", "target": "crm"})
    assert replayed.status_code == 200 and replayed.get_json() == {"replayed": 1}
    again = store.get_delivery("w:crm:m:c1:1")
    assert again is not None and again.state == "pending" and again.attempts == 0
    by_id = client.post(f"{ADMIN_PREFIX}/deliveries/replay", headers=headers, json={"ids": ["p:bob/phone:c1:1"]})
    assert by_id.get_json() == {"replayed": 1}

    assert client.delete(f"{ADMIN_PREFIX}/webhooks/crm", headers=headers).get_json() == {"id": "crm", "removed": True}
    assert_error(client.delete(f"{ADMIN_PREFIX}/webhooks/crm", headers=headers), 404, "not_found")
    assert [h.id for h in store.webhooks()] == ["all"]
