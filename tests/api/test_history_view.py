"""History in both views: the raw log with its change entries (view=entries, the default) and the
messages as they stand now (view=messages), and what the conversation list makes of changes."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage, Store
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = bearer("alice"), bearer("bob")
TS = 1_700_000_000_000


def entry(sender: str, cmid: str, body: str = "", **kw: Any) -> NewMessage:
    return NewMessage("c1", sender, cmid, body, TS + len(cmid), **kw)


@pytest.fixture
def changed(store: Store) -> Store:
    """1 alice "helo" (edited to "hello" by 3, 👍 by bob at 4), 2 bob "bye" (deleted by 6), 5 bob's reply to 1."""
    results = store.append([
        entry("alice", "m1", "helo"),
        entry("bob", "m2", "bye"),
        entry("alice", "e1", "hello", kind=EntryKind.EDIT, target=1),
        entry("bob", "r1", "👍", kind=EntryKind.REACT, target=1, emoji="👍"),
        entry("bob", "m3", "welcome", reply_to=1),
        entry("bob", "d1", kind=EntryKind.DELETE, target=2),
    ])
    assert all(r.refusal is None for r in results)
    return store


def get(client: FlaskClient, query: str = "", headers: dict[str, str] = ALICE) -> dict[str, Any]:
    response = client.get(f"/v1/conversations/c1/messages{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_entries_is_the_default_and_holds_every_change(client: FlaskClient, changed: Store) -> None:
    body = get(client)
    assert body == get(client, "?view=entries")
    assert body["last_seq"] == 6 and body["has_more"] is False
    entries = body["messages"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [e.get("kind", "message") for e in entries] == ["message", "message", "edit", "react", "message", "delete"]
    assert entries[0]["body"] == "helo"  # the log keeps the message as sent
    assert entries[1] == {**entries[1], "body": "", "attachments": [], "erased": True}
    assert entries[2] == {**entries[2], "target": 1, "body": "hello"}
    assert entries[3]["emoji"] == "👍" and entries[4]["reply_to"] == 1 and entries[5]["target"] == 2


def test_messages_view_is_the_conversation_as_it_stands(client: FlaskClient, changed: Store) -> None:
    body = get(client, "?view=messages")
    assert body["last_seq"] == 6 and body["has_more"] is False
    first, gone, reply = body["messages"]
    assert first == {
        "conv": "c1", "seq": 1, "id": first["id"], "sender": "alice", "client_msg_id": "m1", "body": "hello",
        "attachments": [], "ts": TS + 2, "reply_to": None, "edited": {"seq": 3, "ts": TS + 2}, "deleted": None,
        "reactions": [{"emoji": "👍", "count": 1, "users": ["bob"]}],
    }
    assert gone["seq"] == 2 and gone["body"] == "" and gone["deleted"] == {"seq": 6, "by": "bob", "ts": TS + 2}
    assert gone["reactions"] == [] and gone["edited"] is None
    assert reply["seq"] == 5 and reply["reply_to"] == 1 and reply["body"] == "welcome"


def test_messages_view_pages_count_messages(client: FlaskClient, changed: Store) -> None:
    newest = get(client, "?view=messages&limit=2")
    assert [m["seq"] for m in newest["messages"]] == [2, 5] and newest["has_more"] is True
    older = get(client, "?view=messages&limit=2&before=2")
    assert [m["seq"] for m in older["messages"]] == [1] and older["has_more"] is False
    after = get(client, "?view=messages&after=1&limit=1")
    assert [m["seq"] for m in after["messages"]] == [2] and after["has_more"] is True


def test_the_view_answers_the_same_refusals(client: FlaskClient, changed: Store) -> None:
    assert_error(client.get("/v1/conversations/c1/messages?view=messages", headers=bearer("carol")), 403, "forbidden")
    assert_error(client.get("/v1/conversations/nope/messages?view=messages", headers=ALICE), 404, "not_found")
    response = client.get("/v1/conversations/c1/messages?view=messages&before=3&after=1", headers=ALICE)
    assert_error(response, 400, "bad_request")


def test_the_conversation_list_counts_and_previews_messages_as_they_stand(
    client: FlaskClient, changed: Store
) -> None:
    (conv,) = [c for c in client.get("/v1/conversations", headers=ALICE).get_json()["conversations"]
               if c["id"] == "c1"]
    assert conv["last_seq"] == 6
    assert conv["unread"] == 1  # bob's reply; his deleted message and his reaction are not unread messages
    assert conv["last_message"] == {"seq": 5, "sender": "bob", "body": "welcome", "ts": TS + 2}
    changed.append([entry("bob", "d2", kind=EntryKind.DELETE, target=5),
                    entry("alice", "e2", "hello, all", kind=EntryKind.EDIT, target=1)])
    conv = client.get("/v1/conversations/c1", headers=BOB).get_json()
    assert conv["unread"] == 1  # alice's edited message 1; the edit itself is not a message
    assert conv["last_message"]["seq"] == 5 and conv["last_message"]["body"] == ""  # a tombstone
    changed.append([entry("bob", "m4", "x" * 300)])
    conv = client.get("/v1/conversations/c1", headers=ALICE).get_json()
    assert conv["last_message"]["body"] == "x" * 140 and conv["unread"] == 1
