"""The data lifecycle through the admin API: erasing a user, redacting a message, deleting a
conversation and setting its retention, checked in the store, the media store, the delivery log
and what members read back (history in both views, conversations, logins)."""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.core.config import Settings
from chatmq.core.lifecycle import DAY_MS, Lifecycle
from chatmq.core.media import MediaStore, open_media_store
from chatmq.core.presence import Presence
from chatmq.core.protocol import EntryKind
from chatmq.core.store import Store
from chatmq.core.store.base import Delivery, NewMessage, PushTarget, ReceiptUpdate, now_ms
from tests.api.helpers import PASSWORDS, assert_error, bearer
from tests.api.test_admin import ADMIN_PREFIX, admin_headers
from tests.api.test_media import upload
from tests.media import samples

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def media(settings: Settings) -> MediaStore:
    return open_media_store(settings)


@pytest.fixture
def client(settings: Settings, store: Store, redis_client: redis.Redis, media: MediaStore) -> FlaskClient:
    from chatmq.api import create_app

    app: Flask = create_app(settings, store=store, redis_client=redis_client, media_store=media)
    return app.test_client()


def send(store: Store, conv: str, sender: str, cmid: str, body: str = "", ts: int | None = None,
         **extra: object) -> int:
    (result,) = store.append([NewMessage(conv=conv, sender=sender, client_msg_id=cmid, body=body,
                                         ts=now_ms() if ts is None else ts, **extra)])  # type: ignore[arg-type]
    assert result.message is not None, result
    return result.message.seq


def history(client: FlaskClient, conv: str, user: str = "alice", **query: object) -> dict:
    response = client.get(f"/v1/conversations/{conv}/messages", query_string=query, headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_deleting_a_user_erases_their_messages_media_reactions_and_account(
    client: FlaskClient, store: Store, media: MediaStore, redis_client: redis.Redis
) -> None:
    photo = upload(client, "bob", samples.PNG, "secret.png").get_json()
    media.link(photo["media_id"], "c1")
    attachment = {k: photo[k] for k in ("media_id", "url", "mime", "size", "sha256")}
    secret = send(store, "c1", "bob", "b1", "bob's secret", attachments=(attachment,))
    edit_seq = send(store, "c1", "bob", "b2", "bob's edited secret", kind=EntryKind.EDIT, target=secret)
    alices = send(store, "c1", "alice", "a1", "alice stays")
    send(store, "c1", "bob", "b3", "👍", kind=EntryKind.REACT, target=alices, emoji="👍")
    store.apply_receipts([ReceiptUpdate("c1", "bob", alices, "read", now_ms())])
    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok"))
    store.set_mute("c1", "bob", 0)
    Presence(redis_client, 30_000).device_online("bob", "phone", "conn-1", now_ms())
    store.add_deliveries([Delivery(
        id="w1", channel="webhook", target="hook", order_key="hook:c1",
        payload={"conv": "c1", "event": "message.created", "data": {"seq": secret, "body": "bob's secret"}},
        next_at=0)])  # fmt: skip

    def search(q: str) -> list[int]:
        found = client.get("/v1/search", query_string={"q": q}, headers=bearer("alice"))
        assert found.status_code == 200, found.get_json()
        return [r["seq"] for r in found.get_json()["results"]]

    assert search("secret") == [secret]
    response = client.delete(f"{ADMIN_PREFIX}/users/bob", headers=admin_headers())
    assert response.status_code == 200, response.get_json()
    out = response.get_json()
    assert out["erased"] and out["messages_erased"] == 1 and out["reactions_erased"] == 1
    assert out["conversations_left"] == ["c1"]

    entries = {m["seq"]: m for m in history(client, "c1")["messages"]}
    assert entries[secret]["body"] == "" and entries[secret]["attachments"] == [] and entries[secret]["erased"]
    assert entries[edit_seq]["body"] == "" and entries[edit_seq]["erased"]
    assert entries[alices]["body"] == "alice stays"
    views = {m["seq"]: m for m in history(client, "c1", view="messages")["messages"]}
    assert views[secret]["deleted"]["by"] == "@admin" and views[secret]["body"] == ""
    assert views[alices]["reactions"] == []
    assert search("secret") == [] and search("stays") == [alices]
    assert media.get(photo["media_id"]) is None
    assert store.markers_of("bob") == {} and store.push_targets(["bob"]) == [] and store.mute("c1", "bob") is None
    assert Presence(redis_client, 30_000).get("bob", now_ms()).last_seen == 0
    assert "bob's secret" not in str(store.get_delivery("w1").payload)  # type: ignore[union-attr]
    assert "bob" not in store.get_conversation("c1").members  # type: ignore[union-attr]
    refused = client.post("/v1/auth/token", json={"username": "bob", "password": PASSWORDS["bob"]})
    assert refused.status_code == 401
    # run again: nothing left to erase, the same answer shape
    again = client.delete(f"{ADMIN_PREFIX}/users/bob", headers=admin_headers()).get_json()
    assert again["messages_erased"] == 0 and again["conversations_left"] == []


def test_redacting_one_message(client: FlaskClient, store: Store) -> None:
    seq = send(store, "c1", "bob", "b1", "regrettable")
    react = send(store, "c1", "alice", "a1", "👍", kind=EntryKind.REACT, target=seq, emoji="👍")
    h = admin_headers()
    response = client.delete(f"{ADMIN_PREFIX}/conversations/c1/messages/{seq}", headers=h)
    assert response.status_code == 200 and response.get_json()["redacted"]
    (view,) = history(client, "c1", view="messages")["messages"]
    assert view["body"] == "" and view["deleted"] == {"seq": seq, "by": "@admin", "ts": view["deleted"]["ts"]}
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/c1/messages/{seq}", headers=h), 409, "conflict")
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/c1/messages/{react}", headers=h), 409, "conflict")
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/c1/messages/99", headers=h), 404, "not_found")
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/nope/messages/1", headers=h), 404, "not_found")


def test_deleting_a_conversation(client: FlaskClient, store: Store) -> None:
    send(store, "c1", "bob", "b1", "gone with it")
    h = admin_headers()
    response = client.delete(f"{ADMIN_PREFIX}/conversations/c1", headers=h)
    assert response.status_code == 200 and response.get_json()["deleted"]
    assert_error(client.get(f"{ADMIN_PREFIX}/conversations/c1", headers=h), 404, "not_found")
    assert client.get("/v1/conversations/c1/messages", headers=bearer("alice")).status_code in (403, 404)
    assert [c["id"] for c in client.get("/v1/conversations", headers=bearer("alice")).get_json()["conversations"]] \
        == ["c2"]
    assert_error(client.delete(f"{ADMIN_PREFIX}/conversations/c1", headers=h), 404, "not_found")


def test_retention_policy_and_where_history_now_starts(client: FlaskClient, store: Store, media: MediaStore) -> None:
    h = admin_headers()
    set_days = client.put(f"{ADMIN_PREFIX}/conversations/c1/retention", json={"days": 7}, headers=h)
    assert set_days.status_code == 200 and set_days.get_json()["retention_days"] == 7
    assert_error(client.put(f"{ADMIN_PREFIX}/conversations/c1/retention", json={"days": -1}, headers=h),
                 400, "bad_request")
    old = now_ms() - 8 * DAY_MS
    for i in range(5):
        send(store, "c1", "bob", f"old{i}", f"old {i}", ts=old + i)
    send(store, "c1", "alice", "new", "new")
    send(store, "c2", "alice", "other", "kept: default policy is forever", ts=old)

    report = Lifecycle(store, media, pause_s=0).purge_expired(0, batch=2)
    assert report.purged == 5 and report.by_conversation == {"c1": 5}

    page = history(client, "c1")
    assert page["first_seq"] == 6 and [m["seq"] for m in page["messages"]] == [6] and not page["has_more"]
    caught_up = history(client, "c1", after=2)
    assert caught_up["first_seq"] == 6 and [m["seq"] for m in caught_up["messages"]] == [6]
    assert history(client, "c1", view="messages")["first_seq"] == 6
    conv = client.get("/v1/conversations/c1", headers=bearer("alice")).get_json()
    assert conv["first_seq"] == 6 and conv["last_seq"] == 6
    assert history(client, "c2")["first_seq"] == 1
    back = client.put(f"{ADMIN_PREFIX}/conversations/c1/retention", json={"days": None}, headers=h).get_json()
    assert back["retention_days"] is None and back["first_seq"] == 6
