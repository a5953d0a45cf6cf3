"""RabbitMQ 3.10's HTTP auth backend answered by the API, called the way RabbitMQ calls it.

The request shapes are those a running 3.10.8 sent (chatmq/api/brokerhooks/rabbitmq.py): form-encoded
POST bodies, Basic auth from the URL's user info. The topic rules themselves are the shared
access cases' (tests/test_access_parity.py); here: logins, client ids, vhosts, resources, secrets.

Fixture world: alice+bob+dave share c1 (dave is disabled), alice+carol share c2, erin has none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api.app import create_app
from chatmq.core.auth import issue_token, token_claims
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store
from tests.api.helpers import PASSWORDS, SECRET
from tests.rabbitmq_hooks import HOOK_AUTH, routing_key

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rabbit(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(rabbitmq_hook_secret=HOOK_AUTH[1], membership_refresh_s=0.0).test_client()


def ask(client: FlaskClient, path: str, **fields: str) -> str:
    response = client.post(f"/v1/rabbitmq/{path}", data=fields, auth=HOOK_AUTH)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.text in ("allow", "deny")
    return response.text


def login(client: FlaskClient, username: str, password: str, client_id: str | None = None) -> str:
    fields = {"username": username, "password": password, "vhost": "/"}
    if client_id != "":
        fields["client_id"] = client_id or f"{username}.phone"
    return ask(client, "user", **fields)


def test_logins_by_password_token_and_the_service(rabbit: FlaskClient) -> None:
    assert login(rabbit, "alice", PASSWORDS["alice"]) == "allow"  # no tags: no management
    assert login(rabbit, "alice", "wrong") == "deny"
    assert login(rabbit, "nobody", "whatever") == "deny"
    assert login(rabbit, "dave", PASSWORDS["dave"]) == "deny"  # disabled
    token = issue_token(SECRET, "bob", 60).token
    assert login(rabbit, "bob", token) == "allow"
    assert login(rabbit, "alice", token, "alice.tablet") == "deny"  # bob's token, alice's name
    service = issue_token(SECRET, SERVICE_USER, 60, service=True).token
    assert login(rabbit, SERVICE_USER, service, "chatmq-bridge") == "allow"
    assert login(rabbit, "alice", service, "alice.laptop") == "deny"


def test_only_mqtt_logins_get_in(rabbit: FlaskClient) -> None:
    """AMQP and management logins carry no client id: chatmq users open no AMQP channel of their own."""
    assert login(rabbit, "alice", PASSWORDS["alice"], client_id="") == "deny"


def test_a_client_id_belongs_to_its_first_user(rabbit: FlaskClient) -> None:
    """Another user's login must not resume (and read) a session queue, as on chatmq's broker."""
    assert login(rabbit, "alice", PASSWORDS["alice"], "shared-id") == "allow"
    assert login(rabbit, "bob", PASSWORDS["bob"], "shared-id") == "deny"
    assert login(rabbit, "alice", PASSWORDS["alice"], "shared-id") == "allow"  # hers, again


def test_revoked_tokens_are_refused(rabbit: FlaskClient, redis_client: redis.Redis) -> None:
    revocations = TokenRevocations(redis_client, 3600)
    token = issue_token(SECRET, "bob", 600).token
    assert login(rabbit, "bob", token) == "allow"
    assert revocations.revoke_token(token_claims(SECRET, token) or {})
    assert login(rabbit, "bob", token) == "deny"


def test_failed_logins_count_with_the_api(make_app: Callable[..., Flask]) -> None:
    rabbit = make_app(rabbitmq_hook_secret=HOOK_AUTH[1], login_failures_per_user=3).test_client()
    for _ in range(3):
        assert login(rabbit, "alice", "wrong") == "deny"
    assert login(rabbit, "alice", PASSWORDS["alice"]) == "deny"
    answer = rabbit.post("/v1/auth/token", json={"username": "alice", "password": PASSWORDS["alice"]})
    assert answer.status_code == 429


def test_a_user_id_with_a_dot_is_refused(rabbit: FlaskClient, store: Store) -> None:
    """RabbitMQ routes ``presence/a.b`` as ``presence.a.b``, which is also ``presence/a/b``."""
    from chatmq.core.auth import hash_password

    store.create_user("al.ice", hash_password("dotted-pw"))
    assert login(rabbit, "al.ice", "dotted-pw") == "deny"


def test_redis_down_refuses_logins(tmp_path: Path, store: Store) -> None:
    settings = Settings(
        data_dir=tmp_path, secret_key=SECRET, redis_url="redis://127.0.0.1:1/0", rabbitmq_hook_secret=HOOK_AUTH[1]
    )
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    client = create_app(settings, store=store, redis_client=dead).test_client()
    assert login(client, "alice", PASSWORDS["alice"]) == "deny"


def test_vhost_is_the_mqtt_plugins_only(rabbit: FlaskClient) -> None:
    assert ask(rabbit, "vhost", username="alice", vhost="/", ip="127.0.0.1", client_id="alice.phone") == "allow"
    assert ask(rabbit, "vhost", username="alice", vhost="other", ip="127.0.0.1") == "deny"


@pytest.mark.parametrize(
    ("resource", "name", "permission", "client_id", "allowed"),
    [
        ("exchange", "amq.topic", "write", "alice.phone", True),  # publish
        ("exchange", "amq.topic", "read", "alice.phone", True),  # bind a subscription
        ("exchange", "amq.topic", "configure", "alice.phone", False),
        ("exchange", "amq.direct", "write", "alice.phone", False),
        ("queue", "mqtt-subscription-alice.phoneqos1", "configure", "alice.phone", True),
        ("queue", "mqtt-subscription-alice.phoneqos0", "read", "alice.phone", True),
        ("queue", "mqtt-subscription-alice.phoneqos1", "write", "alice.phone", True),
        ("queue", "mqtt-subscription-bob.phoneqos1", "read", "alice.phone", False),  # someone else's session
        ("queue", "mqtt-subscription-alice.phoneqos1", "read", "", False),  # not an MQTT connection
        ("queue", "alice-private", "configure", "alice.phone", False),
        ("topic", "amq.topic", "write", "alice.phone", False),  # topics go to /topic
    ],
)
def test_resources(rabbit: FlaskClient, resource: str, name: str, permission: str, client_id: str,
                   allowed: bool) -> None:  # fmt: skip
    fields = {"username": "alice", "vhost": "/", "resource": resource, "name": name, "permission": permission}
    if client_id:
        fields["client_id"] = client_id
    assert ask(rabbit, "resource", **fields) == ("allow" if allowed else "deny")


def topic(client: FlaskClient, user: str, permission: str, mqtt_topic: str, **overrides: str) -> str:
    fields = {
        "username": user,
        "vhost": "/",
        "resource": "topic",
        "name": "amq.topic",
        "permission": permission,
        "routing_key": routing_key(mqtt_topic),
        **overrides,
    }
    return ask(client, "topic", **fields)


def test_topics_follow_membership_changes(rabbit: FlaskClient, store: Store) -> None:
    assert topic(rabbit, "erin", "read", "chat/c2/msg") == "deny"
    store.add_member("c2", "erin")
    assert topic(rabbit, "erin", "read", "chat/c2/msg") == "allow"
    assert topic(rabbit, "erin", "read", "chat/c2/typing/+") == "allow"
    store.remove_member("c2", "erin")
    assert topic(rabbit, "erin", "write", "chat/c2/send/erin") == "deny"


def test_other_vhosts_exchanges_and_permissions_are_denied(rabbit: FlaskClient) -> None:
    assert topic(rabbit, "alice", "write", "chat/c1/send/alice") == "allow"
    assert topic(rabbit, "alice", "write", "chat/c1/send/alice", vhost="other") == "deny"
    assert topic(rabbit, "alice", "write", "chat/c1/send/alice", name="amq.direct") == "deny"
    assert topic(rabbit, "alice", "configure", "chat/c1/send/alice") == "deny"
    assert topic(rabbit, "alice", "write", "chat/c1/send/alice", routing_key="") == "deny"
    assert topic(rabbit, SERVICE_USER, "read", "chat/+/send/+") == "allow"


def test_only_rabbitmq_with_the_secret_may_call(rabbit: FlaskClient, app: Flask) -> None:
    fields = {"username": "alice", "password": PASSWORDS["alice"], "client_id": "alice.phone"}
    assert rabbit.post("/v1/rabbitmq/user", data=fields).status_code == 401
    assert rabbit.post("/v1/rabbitmq/user", data=fields, auth=("rabbitmq", "guess")).status_code == 401
    assert app.test_client().post("/v1/rabbitmq/user", data=fields, auth=HOOK_AUTH).status_code == 404
