"""GET /v1/search: results, paging, narrowing, membership and every refusal."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage, Store
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(60)

ALICE = bearer("alice")
TS = 1_700_000_000_000


@pytest.fixture
def said(store: Store) -> Store:
    store.append([NewMessage("c1", "alice" if i % 2 else "bob", f"m{i}", f"standup note {i}", TS + i)
                  for i in range(1, 31)])  # fmt: skip
    store.append([NewMessage("c2", "carol", "x1", "standup moved", TS + 100)])
    return store


def search(client: FlaskClient, headers: dict[str, str] = ALICE, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/search?" + urlencode(params), headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_results_newest_first_with_the_view_shape_and_a_cursor(client: FlaskClient, said: Store) -> None:
    body = search(client, q="standup", limit=5)
    assert [(r["conv"], r["seq"]) for r in body["results"]] == [("c2", 1), ("c1", 30), ("c1", 29), ("c1", 28),
                                                                ("c1", 27)]  # fmt: skip
    first = body["results"][1]
    assert first == {"conv": "c1", "seq": 30, "id": first["id"], "sender": "bob", "client_msg_id": "m30",
                     "body": "standup note 30", "attachments": [], "ts": TS + 30, "reply_to": None,
                     "edited": None, "deleted": None}  # fmt: skip
    seen = [(r["conv"], r["seq"]) for r in body["results"]]
    while body["next"]:
        body = search(client, q="standup", limit=7, before=body["next"])
        seen += [(r["conv"], r["seq"]) for r in body["results"]]
    assert seen == [("c2", 1)] + [("c1", s) for s in range(30, 0, -1)]


def test_narrowed_to_a_conversation_and_a_sender(client: FlaskClient, said: Store) -> None:
    body = search(client, q="note standup", conv="c1", sender="alice", limit=100)
    assert [r["seq"] for r in body["results"]] == list(range(29, 0, -2)) and body["next"] is None
    assert search(client, q="standup", sender="nobody")["results"] == []


def test_only_the_callers_conversations_and_membership_now(client: FlaskClient, said: Store) -> None:
    assert [r["conv"] for r in search(client, bearer("bob"), q="standup", limit=100)["results"]] == ["c1"] * 30
    assert search(client, bearer("erin"), q="standup")["results"] == []
    said.remove_member("c1", "bob")
    assert search(client, bearer("bob"), q="standup")["results"] == []
    assert_error(client.get("/v1/search?q=standup&conv=c1", headers=bearer("bob")), 403, "forbidden")
    assert_error(client.get("/v1/search?q=standup&conv=nope", headers=ALICE), 404, "not_found")


def test_edits_and_deletions_show_at_once(client: FlaskClient, said: Store) -> None:
    said.append([NewMessage("c1", "bob", "e", "standup cancelled", TS + 200, kind=EntryKind.EDIT, target=30)])
    (hit,) = search(client, q="cancelled")["results"]
    assert (hit["seq"], hit["body"], hit["edited"]["seq"]) == (30, "standup cancelled", 31)
    said.append([NewMessage("c1", "bob", "d", "", TS + 300, kind=EntryKind.DELETE, target=30)])
    assert search(client, q="cancelled")["results"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "q: field required"),
        ("q=", "q: needs at least one word"),
        ("q=%22*%28%29", "q: needs at least one word"),
        ("q=" + "a" * 257, "q: at most 256 characters"),
        ("q=" + "+".join(f"w{i}" for i in range(17)), "q: at most 16 different words"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=101", "limit"),
        ("q=x&before=not-a-cursor", "before: not a cursor this search returned"),
        ("q=x&before=" + "a" * 600, "before"),
        ("q=x&sender=..%2F", "sender: '../' is not a user id"),
        ("q=x&befor=1", "befor"),
    ],
)
def test_bad_queries_are_400_with_the_reason(client: FlaskClient, said: Store, query: str, message: str) -> None:
    error = assert_error(client.get("/v1/search?" + query, headers=ALICE), 400, "bad_request")
    assert message.lower() in error["message"].lower(), error


def test_query_syntax_is_never_an_error(client: FlaskClient, said: Store) -> None:
    """FTS5 operators typed by a user are separators or plain words, never syntax."""
    for q in ['standup"', "standup*", "-standup", "note:standup", "(standup", "standup^", "{note}", "'standup'"]:
        assert search(client, q=q)["results"], q
    for q in ["NEAR(standup note)", "standup OR", "standup AND", "NOT standup"]:  # the words must be there too
        assert search(client, q=q)["results"] == [], q
    assert_error(client.get('/v1/search?q="""', headers=ALICE), 400, "bad_request")


def test_needs_a_token(client: FlaskClient, said: Store) -> None:
    assert_error(client.get("/v1/search?q=standup"), 401, "unauthorized")
