"""EMQX 5's HTTP auth hooks, called the way EMQX calls them, rule by rule of the topic table.

Fixture world: alice+bob+dave share c1 (dave is disabled), alice+carol share c2, erin has none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api.brokerhooks.emqx import SECRET_HEADER
from chatmq.core.auth import issue_token, token_claims
from chatmq.core.config import ADMIN_USER, SERVICE_USER
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store
from tests.api.helpers import PASSWORDS, SECRET

pytestmark = pytest.mark.timeout(60)

HOOK_SECRET = "emqx-hook-secret-0123456789"
HEADERS = {SECRET_HEADER: HOOK_SECRET}


@pytest.fixture
def emqx(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(emqx_hook_secret=HOOK_SECRET, membership_refresh_s=0.0).test_client()


def authn(client: FlaskClient, username: str, password: str, **extra: Any) -> dict[str, Any]:
    body = {"username": username, "password": password, "clientid": f"{username}-phone",
            "peerhost": "10.0.0.7", **extra}
    response = client.post("/v1/emqx/authn", json=body, headers=HEADERS)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def authz(client: FlaskClient, username: str, action: str, topic: str) -> str:
    body = {"username": username, "clientid": f"{username}-phone", "topic": topic, "action": action,
            "qos": "1", "retain": "false", "peerhost": "10.0.0.7", "mountpoint": ""}
    response = client.post("/v1/emqx/authz", json=body, headers=HEADERS)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return str(response.get_json()["result"])


def test_authn_passwords_tokens_and_the_service(emqx: FlaskClient) -> None:
    assert authn(emqx, "alice", PASSWORDS["alice"]) == {"result": "allow", "is_superuser": False}
    assert authn(emqx, "alice", "wrong")["result"] == "deny"
    assert authn(emqx, "nobody", "whatever")["result"] == "deny"
    assert authn(emqx, "dave", PASSWORDS["dave"])["result"] == "deny"  # disabled
    token = issue_token(SECRET, "bob", 60).token
    assert authn(emqx, "bob", token) == {"result": "allow", "is_superuser": False}
    assert authn(emqx, "alice", token)["result"] == "deny"  # bob's token, alice's name
    service = issue_token(SECRET, SERVICE_USER, 60, service=True).token
    assert authn(emqx, SERVICE_USER, service) == {"result": "allow", "is_superuser": True}
    assert authn(emqx, "alice", service)["result"] == "deny"
    assert authn(emqx, SERVICE_USER, "a password")["result"] == "deny"
    assert authn(emqx, "alice", "")["result"] == "deny"
    forged = issue_token("another-secret-of-at-least-32-bytes!!", SERVICE_USER, 60, service=True).token
    assert authn(emqx, SERVICE_USER, forged)["result"] == "deny"


def test_authn_refuses_revoked_tokens(emqx: FlaskClient, redis_client: redis.Redis) -> None:
    """The same revocation marks as chatmq's own broker: one token, or every token of a user."""
    revocations = TokenRevocations(redis_client, 3600)
    one, other = issue_token(SECRET, "bob", 600).token, issue_token(SECRET, "bob", 600).token
    assert authn(emqx, "bob", one)["result"] == "allow"
    assert revocations.revoke_token(token_claims(SECRET, one) or {})
    assert authn(emqx, "bob", one)["result"] == "deny"
    assert authn(emqx, "bob", other)["result"] == "allow"
    alices = issue_token(SECRET, "alice", 600).token
    revocations.revoke_user("alice")  # sign out everywhere
    assert authn(emqx, "alice", alices)["result"] == "deny"
    time.sleep(0.002)  # a token issued after the mark is good
    assert authn(emqx, "alice", issue_token(SECRET, "alice", 600).token)["result"] == "allow"


def test_authn_counts_failed_logins_with_the_api_and_the_broker(make_app: Callable[..., Flask]) -> None:
    """Over the per-user limit even the right password is denied, and the counters are the ones
    ``POST /v1/auth/token`` (and chatmq's broker) use; the per-address limit follows ``peerhost``."""
    app = make_app(emqx_hook_secret=HOOK_SECRET, login_failures_per_user=3, login_failures_per_address=5)
    emqx = app.test_client()
    for _ in range(3):
        assert authn(emqx, "alice", "wrong", peerhost="10.0.0.1")["result"] == "deny"
    assert authn(emqx, "alice", PASSWORDS["alice"], peerhost="10.0.0.2")["result"] == "deny"
    answer = emqx.post("/v1/auth/token", json={"username": "alice", "password": PASSWORDS["alice"]})
    assert answer.status_code == 429 and answer.get_json()["error"]["code"] == "rate_limited"
    # Five failures from one address (alice's three, then bob's and carol's) close it to everyone...
    assert authn(emqx, "bob", "wrong", peerhost="10.0.0.1")["result"] == "deny"
    assert authn(emqx, "carol", "wrong", peerhost="10.0.0.1")["result"] == "deny"
    assert authn(emqx, "erin", PASSWORDS["erin"], peerhost="10.0.0.1")["result"] == "deny"
    # ...but not to the same user elsewhere.
    assert authn(emqx, "erin", PASSWORDS["erin"], peerhost="10.0.0.9")["result"] == "allow"



# (user, action, topic, allowed): every row of the topic table in docs/protocol.md, both sides.
RULES = [
    # send / typing / receipt: publish as yourself, in your conversations only
    ("alice", "publish", "chat/c1/send/alice", True),
    ("alice", "publish", "chat/c1/send/bob", False),  # spoofed sender
    ("erin", "publish", "chat/c1/send/erin", False),  # not a member
    ("carol", "publish", "chat/c1/send/carol", False),
    ("alice", "publish", "chat/c2/typing/alice", True),
    ("alice", "publish", "chat/c2/typing/carol", False),
    ("bob", "publish", "chat/c1/receipt/bob", True),
    ("bob", "publish", "chat/c1/receipt/alice", False),
    ("bob", "publish", "chat/c2/receipt/bob", False),
    ("alice", "subscribe", "chat/c1/send/alice", False),  # sends are read by the service only
    ("alice", "subscribe", "chat/c1/send/+", False),
    ("alice", "subscribe", "chat/c1/receipt/bob", False),
    # msg / receipts / typing: members read, nobody but the server writes msg and receipts
    ("bob", "subscribe", "chat/c1/msg", True),
    ("carol", "subscribe", "chat/c1/msg", False),
    ("bob", "publish", "chat/c1/msg", False),
    ("alice", "subscribe", "chat/c2/receipts", True),
    ("bob", "subscribe", "chat/c2/receipts", False),
    ("alice", "publish", "chat/c2/receipts", False),
    ("alice", "subscribe", "chat/c2/typing/+", True),
    ("alice", "subscribe", "chat/c2/typing/carol", True),
    ("bob", "subscribe", "chat/c2/typing/+", False),
    ("alice", "subscribe", "chat/+/msg", False),  # wildcards over conversations
    ("alice", "subscribe", "chat/c1/#", False),
    # ack / events: your own only, written by the server
    ("alice", "subscribe", "user/alice/ack", True),
    ("alice", "subscribe", "user/bob/ack", False),
    ("alice", "publish", "user/alice/ack", False),
    ("carol", "subscribe", "user/carol/events", True),
    ("carol", "subscribe", "user/alice/events", False),
    ("alice", "subscribe", "user/+/ack", False),
    # presence: publish your devices' state; read your own, and that of users you share a conversation with
    ("alice", "publish", "presence/alice/phone", True),
    ("alice", "publish", "presence/bob/phone", False),
    ("alice", "publish", "presence/alice", False),
    ("alice", "subscribe", "presence/alice/+", True),
    ("alice", "subscribe", "presence/bob/+", False),
    ("alice", "subscribe", "presence/bob", True),
    ("alice", "subscribe", "presence/carol", True),
    ("bob", "subscribe", "presence/carol", False),
    ("erin", "subscribe", "presence/alice", False),
    ("erin", "subscribe", "presence/erin", True),
    ("alice", "subscribe", "presence/+", False),
    # outside the namespaces, and whole-tree wildcards
    ("alice", "publish", "elsewhere/topic", False),
    ("alice", "subscribe", "#", False),
    ("alice", "subscribe", "$SYS/#", False),
    # the service may do anything; the admin only reads its control responses
    (SERVICE_USER, "subscribe", "chat/+/send/+", True),
    (SERVICE_USER, "publish", "chat/c1/msg", True),
    (ADMIN_USER, "subscribe", "$CONTROL/chatmq/v1/response/+", True),
    (ADMIN_USER, "publish", "chat/c1/send/alice", False),
]


@pytest.mark.parametrize(("user", "action", "topic", "allowed"), RULES)
def test_authz_rule(emqx: FlaskClient, user: str, action: str, topic: str, allowed: bool) -> None:
    assert authz(emqx, user, action, topic) == ("allow" if allowed else "deny")


def test_a_membership_change_is_seen_by_the_next_check(emqx: FlaskClient, store: Store) -> None:
    assert authz(emqx, "erin", "subscribe", "chat/c2/msg") == "deny"
    store.add_member("c2", "erin")
    assert authz(emqx, "erin", "subscribe", "chat/c2/msg") == "allow"
    assert authz(emqx, "erin", "subscribe", "presence/carol") == "allow"
    store.remove_member("c2", "erin")
    assert authz(emqx, "erin", "publish", "chat/c2/send/erin") == "deny"


def test_malformed_requests_are_denied(emqx: FlaskClient) -> None:
    for body in ({}, {"username": "alice", "topic": "chat/c1/msg"}, {"username": "alice", "topic": "chat/c1/msg",
                  "action": "all"}, {"username": "", "topic": "chat/c1/msg", "action": "subscribe"}, [1, 2]):
        response = emqx.post("/v1/emqx/authz", json=body, headers=HEADERS)
        assert response.get_json() == {"result": "deny"}
    response = emqx.post("/v1/emqx/authn", data=b"not json", headers=HEADERS, content_type="application/json")
    assert response.get_json() == {"result": "deny"}


def test_only_emqx_with_the_secret_may_call(emqx: FlaskClient, app: Flask) -> None:
    body = {"username": "alice", "password": PASSWORDS["alice"]}
    assert emqx.post("/v1/emqx/authn", json=body).status_code == 401
    assert emqx.post("/v1/emqx/authn", json=body, headers={SECRET_HEADER: "guess"}).status_code == 401
    # Not configured: the hooks do not exist.
    assert app.test_client().post("/v1/emqx/authn", json=body, headers=HEADERS).status_code == 404
