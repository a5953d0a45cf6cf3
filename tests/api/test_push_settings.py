"""Push targets, mutes and logout over the HTTP API (the notifier reads them from the store)."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from chatmq.core.store import Store
from tests.api.helpers import assert_error, bearer


def test_register_list_replace_and_delete_push_targets(client: FlaskClient, store: Store) -> None:
    alice = bearer("alice")
    created = client.post("/v1/push/targets", headers=alice,
                          json={"device": "phone", "platform": "fcm", "token": "tok-1", "preview": False})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["device"] == "phone" and body["platform"] == "fcm" and body["preview"] is False
    assert body["app_id"] is None and body["updated_at"] > 0
    client.post("/v1/push/targets", headers=alice,
                json={"device": "tablet", "platform": "apns", "token": "tok-2", "app_id": "com.example.chat"})
    listed = client.get("/v1/push/targets", headers=alice).get_json()["targets"]
    assert [(t["device"], t["token"]) for t in listed] == [("phone", "tok-1"), ("tablet", "tok-2")]
    assert client.get("/v1/push/targets", headers=bearer("bob")).get_json() == {"targets": []}

    # bob's phone gets alice's old tablet token: it leaves alice
    client.post("/v1/push/targets", headers=bearer("bob"), json={"device": "p", "platform": "apns", "token": "tok-2"})
    assert [t.device for t in store.push_targets(["alice"])] == ["phone"]

    assert client.delete("/v1/push/targets/phone", headers=alice).status_code == 204
    assert_error(client.delete("/v1/push/targets/phone", headers=alice), 404, "not_found")
    assert store.push_targets(["alice"]) == []


def test_push_target_input_is_checked(client: FlaskClient) -> None:
    alice = bearer("alice")
    for bad in (
        {"device": "phone", "platform": "sms", "token": "t"},
        {"device": "a/b", "platform": "fcm", "token": "t"},
        {"device": "phone", "platform": "fcm", "token": ""},
        {"device": "phone", "platform": "fcm", "token": "t", "extra": 1},
        {"device": "phone", "platform": "fcm"},
        {"device": "phone", "platform": "fcm", "token": "t", "preview": "no"},
    ):
        assert_error(client.post("/v1/push/targets", headers=alice, json=bad), 400, "bad_request")
    assert_error(client.post("/v1/push/targets", json={"device": "p", "platform": "fcm", "token": "t"}),
                 401, "unauthorized")


def test_mute_and_unmute_a_conversation(client: FlaskClient, store: Store) -> None:
    alice = bearer("alice")
    assert client.get("/v1/conversations/c1/mute", headers=alice).get_json() == {
        "conv": "c1", "muted": False, "until": None}
    answer = client.put("/v1/conversations/c1/mute", headers=alice, json={})
    assert answer.status_code == 200 and answer.get_json() == {"conv": "c1", "muted": True, "until": None}
    assert store.mute("c1", "alice") == 0
    answer = client.put("/v1/conversations/c1/mute", headers=alice, json={"until": 4_102_444_800_000})
    assert answer.get_json() == {"conv": "c1", "muted": True, "until": 4_102_444_800_000}
    assert client.get("/v1/conversations/c1/mute", headers=alice).get_json()["until"] == 4_102_444_800_000
    assert client.delete("/v1/conversations/c1/mute", headers=alice).status_code == 204
    assert store.mute("c1", "alice") is None
    assert_error(client.put("/v1/conversations/c1/mute", headers=bearer("carol"), json={}), 403, "forbidden")
    assert_error(client.get("/v1/conversations/nope/mute", headers=alice), 404, "not_found")
    assert_error(client.put("/v1/conversations/c1/mute", headers=alice, json={"until": 0}), 400, "bad_request")


def test_logout_revokes_the_token_and_forgets_the_device(client: FlaskClient, store: Store) -> None:
    alice = bearer("alice")
    client.post("/v1/push/targets", headers=alice, json={"device": "phone", "platform": "fcm", "token": "t1"})
    client.post("/v1/push/targets", headers=alice, json={"device": "tablet", "platform": "fcm", "token": "t2"})
    assert client.post("/v1/auth/logout", headers=alice, json={"device": "phone"}).status_code == 204
    assert [t.device for t in store.push_targets(["alice"])] == ["tablet"]
    assert_error(client.get("/v1/push/targets", headers=alice), 401, "unauthorized")  # that token is revoked
    other = bearer("alice")
    assert client.get("/v1/push/targets", headers=other).status_code == 200  # other tokens still work
    assert client.post("/v1/auth/logout", headers=other, json={}).status_code == 204
    assert [t.device for t in store.push_targets(["alice"])] == ["tablet"]


def test_disabling_or_deleting_a_user_forgets_their_push_targets(store: Store, redis_client: redis.Redis) -> None:
    from chatmq.core.admin import Admin
    from chatmq.core.revocation import TokenRevocations
    from chatmq.core.store.base import PushTarget

    admin = Admin(store=store, secret="s" * 32, token_ttl_s=60, revocations=TokenRevocations(redis_client, 60))
    store.put_push_target(PushTarget("bob", "phone", "fcm", "t-bob"))
    store.put_push_target(PushTarget("carol", "phone", "fcm", "t-carol"))
    store.put_push_target(PushTarget("alice", "phone", "fcm", "t-alice"))
    admin.update_user("bob", disabled=True)
    admin.delete_user("carol")
    assert [t.user for t in store.push_targets(["alice", "bob", "carol"])] == ["alice"]
