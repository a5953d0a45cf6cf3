"""GET /v1/conversations and GET /v1/presence/{user}."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient

from chatmq.core.presence import Presence
from chatmq.core.store import NewMessage, Store
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(30)


def test_conversations_lists_only_the_callers(client: FlaskClient, store: Store) -> None:
    store.append([NewMessage("c1", "bob", "x1", "hi", 1), NewMessage("c1", "alice", "x2", "yo", 2)])
    alice = client.get("/v1/conversations", headers=bearer("alice")).get_json()
    keys = ("id", "title", "members", "last_seq")
    assert [{k: c[k] for k in keys} for c in alice["conversations"]] == [
        {"id": "c1", "title": "alice & bob", "members": ["alice", "bob", "dave"], "last_seq": 2},
        {"id": "c2", "title": None, "members": ["alice", "carol"], "last_seq": 0},
    ]
    carol = client.get("/v1/conversations", headers=bearer("carol")).get_json()
    assert [c["id"] for c in carol["conversations"]] == ["c2"]
    assert client.get("/v1/conversations", headers=bearer("erin")).get_json() == {"conversations": []}


@pytest.fixture
def presence(redis_client: redis.Redis) -> Presence:
    return Presence(redis_client, ttl_ms=60_000)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_presence_of_a_conversation_partner(client: FlaskClient, presence: Presence) -> None:
    before = now_ms()
    presence.device_online("bob", "phone", "conn-1", before)
    body = client.get("/v1/presence/bob", headers=bearer("alice")).get_json()
    assert body["user"] == "bob" and body["status"] == "online"
    assert body["last_seen"] >= before

    presence.device_offline("bob", "phone", "conn-1", now_ms())
    assert client.get("/v1/presence/bob", headers=bearer("alice")).get_json()["status"] == "offline"


def test_presence_of_self_never_seen(client: FlaskClient) -> None:
    response = client.get("/v1/presence/erin", headers=bearer("erin"))
    assert response.status_code == 200
    assert response.get_json() == {"user": "erin", "status": "offline", "last_seen": 0}


def test_presence_expires_with_the_heartbeat_deadline(client: FlaskClient, redis_client: redis.Redis) -> None:
    Presence(redis_client, ttl_ms=1).device_online("carol", "d1", "c", now_ms() - 1000)
    assert client.get("/v1/presence/carol", headers=bearer("alice")).get_json()["status"] == "offline"


@pytest.mark.parametrize(("viewer", "target"), [("bob", "carol"), ("carol", "bob"), ("erin", "alice")])
def test_presence_hidden_without_a_shared_conversation(
    client: FlaskClient, presence: Presence, viewer: str, target: str
) -> None:
    presence.device_online(target, "d", "c", now_ms())
    assert_error(client.get(f"/v1/presence/{target}", headers=bearer(viewer)), 403, "forbidden")


@pytest.mark.parametrize("user", ["ghost", "bad$id", "@bridge"])
def test_presence_of_unknown_user_is_404(client: FlaskClient, user: str) -> None:
    assert_error(client.get(f"/v1/presence/{user}", headers=bearer("alice")), 404, "not_found")
