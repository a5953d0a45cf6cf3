"""Conversation management through the API, every permission rule, and the read-state fields."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from chatmq.core.store import NewMessage, ReceiptUpdate, Store
from chatmq.core.store.base import EVENT_CREATED, EVENT_MEMBER_ADDED, EVENT_MEMBER_REMOVED, EVENT_TITLE_CHANGED
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(30)


def create(client: FlaskClient, owner: str = "alice", **body: object) -> dict:
    response = client.post("/v1/conversations", json={"members": ["bob"], **body}, headers=bearer(owner))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_create_makes_the_caller_member_and_owner(client: FlaskClient, store: Store) -> None:
    before = len(store.pending_events())
    made = create(client, id="room", title="Room")
    assert made["id"] == "room" and made["owner"] == "alice" and made["members"] == ["alice", "bob"]
    assert (made["title"], made["fanout"], made["member_count"], made["unread"]) == ("Room", "write", 2, 0)
    assert made["last_message"] is None
    generated = create(client, owner="carol")
    assert generated["owner"] == "carol" and len(generated["id"]) >= 8
    events = store.pending_events()[before:]
    assert [e.kind for e in events] == [EVENT_CREATED, EVENT_CREATED]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"members": ["ghost"]}, 400, "bad_request"),
        ({"members": "bob"}, 400, "bad_request"),
        ({"members": ["bob"], "id": "bad/id"}, 400, "bad_request"),
        ({"members": ["bob"], "title": "x" * 201}, 400, "bad_request"),
        ({"members": ["bob"], "colour": "red"}, 400, "bad_request"),
        ({"members": ["bob"], "id": "c1"}, 409, "conflict"),
    ],
)
def test_create_errors(client: FlaskClient, store: Store, body: dict, status: int, code: str) -> None:
    before = store.list_conversations()
    assert_error(client.post("/v1/conversations", json=body, headers=bearer("alice")), status, code)
    assert store.list_conversations() == before


def add(client: FlaskClient, conv: str, user: str, caller: str):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/conversations/{conv}/members", json={"user": user}, headers=bearer(caller))


def test_only_the_owner_adds_members(client: FlaskClient, store: Store) -> None:
    create(client, id="room")
    assert_error(add(client, "room", "carol", "bob"), 403, "forbidden")
    assert_error(add(client, "room", "carol", "erin"), 403, "forbidden")
    assert_error(add(client, "nope", "carol", "alice"), 404, "not_found")
    assert_error(add(client, "room", "ghost", "alice"), 400, "bad_request")
    assert_error(add(client, "room", "bob", "alice"), 409, "conflict")
    # admin-made conversations have no owner: members cannot manage them
    assert_error(add(client, "c1", "carol", "alice"), 403, "forbidden")
    response = add(client, "room", "carol", "alice")
    assert response.status_code == 200 and response.get_json()["members"] == ["alice", "bob", "carol"]
    assert store.pending_events()[-1].kind == EVENT_MEMBER_ADDED


def test_remove_member_owner_or_self(client: FlaskClient, store: Store) -> None:
    create(client, id="room", members=["bob", "carol", "erin"])
    assert_error(client.delete("/v1/conversations/room/members/carol", headers=bearer("bob")), 403, "forbidden")
    assert_error(client.delete("/v1/conversations/room/members/carol", headers=bearer("dave")), 401, "unauthorized")
    assert_error(client.delete("/v1/conversations/nope/members/carol", headers=bearer("alice")), 404, "not_found")
    assert_error(client.delete("/v1/conversations/room/members/ghost", headers=bearer("alice")), 404, "not_found")
    assert client.delete("/v1/conversations/room/members/carol", headers=bearer("alice")).status_code == 204
    assert client.delete("/v1/conversations/room/members/bob", headers=bearer("bob")).status_code == 204  # leave
    assert store.get_conversation("room").members == ("alice", "erin")  # type: ignore[union-attr]
    assert [e.subject for e in store.pending_events() if e.kind == EVENT_MEMBER_REMOVED] == ["carol", "bob"]
    # a removed member loses history at once
    assert_error(client.get("/v1/conversations/room/messages", headers=bearer("bob")), 403, "forbidden")
    assert_error(client.delete("/v1/conversations/room/members/erin", headers=bearer("bob")), 403, "forbidden")


def test_patch_title_owner_only(client: FlaskClient, store: Store) -> None:
    create(client, id="room", title="Old")
    assert_error(client.patch("/v1/conversations/room", json={"title": "X"}, headers=bearer("bob")), 403, "forbidden")
    assert_error(client.patch("/v1/conversations/room", json={"title": 5}, headers=bearer("alice")), 400, "bad_request")
    assert_error(client.patch("/v1/conversations/room", json={}, headers=bearer("alice")), 400, "bad_request")
    assert_error(client.patch("/v1/conversations/nope", json={"title": "X"}, headers=bearer("alice")), 404, "not_found")
    response = client.patch("/v1/conversations/room", json={"title": "New"}, headers=bearer("alice"))
    assert response.status_code == 200 and response.get_json()["title"] == "New"
    cleared = client.patch("/v1/conversations/room", json={"title": None}, headers=bearer("alice"))
    assert cleared.get_json()["title"] is None
    assert store.pending_events()[-1].kind == EVENT_TITLE_CHANGED


def test_read_state_unread_preview_and_receipts(client: FlaskClient, store: Store) -> None:
    store.append([NewMessage("c1", "bob", f"b{i}", f"message {i} " + "x" * 200, 10 + i) for i in range(1, 5)])
    store.append([NewMessage("c1", "alice", "a1", "mine", 20)])
    store.apply_receipts([ReceiptUpdate("c1", "alice", 2, "read", 30), ReceiptUpdate("c1", "bob", 5, "delivered", 31)])
    listed = {c["id"]: c for c in client.get("/v1/conversations", headers=bearer("alice")).get_json()["conversations"]}
    c1 = listed["c1"]
    assert (c1["last_seq"], c1["read_seq"], c1["delivered_seq"], c1["unread"]) == (5, 2, 2, 2)
    assert c1["last_message"] == {"seq": 5, "sender": "alice", "body": "mine", "ts": 20}
    assert listed["c2"]["unread"] == 0 and listed["c2"]["last_message"] is None
    bob = {c["id"]: c for c in client.get("/v1/conversations", headers=bearer("bob")).get_json()["conversations"]}
    assert bob["c1"]["unread"] == 1 and bob["c1"]["read_seq"] == 0

    receipts = client.get("/v1/conversations/c1/receipts", headers=bearer("bob")).get_json()["receipts"]
    assert receipts == [
        {"user": "alice", "delivered_seq": 2, "read_seq": 2, "updated_at": 30},
        {"user": "bob", "delivered_seq": 5, "read_seq": 0, "updated_at": 31},
        {"user": "dave", "delivered_seq": 0, "read_seq": 0, "updated_at": 0},
    ]
    assert_error(client.get("/v1/conversations/c1/receipts", headers=bearer("carol")), 403, "forbidden")
    assert_error(client.get("/v1/conversations/zz/receipts", headers=bearer("carol")), 404, "not_found")


def test_fanout_mode_follows_the_threshold(make_app, store: Store) -> None:  # type: ignore[no-untyped-def]
    client = make_app(fanout_read_threshold=2).test_client()
    assert create(client, id="big", members=["bob"])["fanout"] == "write"
    added = add(client, "big", "carol", "alice")
    assert added.get_json()["fanout"] == "read"
    client.delete("/v1/conversations/big/members/carol", headers=bearer("alice"))
    listed = client.get("/v1/conversations", headers=bearer("alice")).get_json()["conversations"]
    assert {c["id"]: c["fanout"] for c in listed}["big"] == "write"


def test_get_one_conversation(client: FlaskClient) -> None:
    one = client.get("/v1/conversations/c1", headers=bearer("bob")).get_json()
    assert one["id"] == "c1" and one["members"] == ["alice", "bob", "dave"]
    assert_error(client.get("/v1/conversations/c1", headers=bearer("carol")), 403, "forbidden")
    assert_error(client.get("/v1/conversations/zz", headers=bearer("carol")), 404, "not_found")
