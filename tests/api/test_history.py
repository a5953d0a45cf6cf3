"""GET /v1/conversations/{conv}/messages: paging, bounds and every refusal."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from chatmq.core.store import NewMessage, Store
from tests.api.helpers import assert_error, bearer

pytestmark = pytest.mark.timeout(60)

TOTAL = 250
ALICE = bearer("alice")


@pytest.fixture
def filled(store: Store) -> Store:
    """250 messages in c1 from alice and bob, stored in batches as the bridge would."""
    now = int(time.time() * 1000)
    batch = [
        NewMessage("c1", "alice" if i % 2 else "bob", f"m{i}", f"hello {i}", now + i, ({"n": i},) if i == 7 else ())
        for i in range(1, TOTAL + 1)
    ]
    for start in range(0, TOTAL, 100):
        store.append(batch[start : start + 100])
    assert store.get_conversation("c1").last_seq == TOTAL  # type: ignore[union-attr]
    return store


def page(client: FlaskClient, query: str = "", headers: dict[str, str] = ALICE) -> dict[str, Any]:
    response = client.get(f"/v1/conversations/c1/messages{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def seqs(body: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in body["messages"]]


def test_default_is_the_newest_50_ascending(client: FlaskClient, filled: Store) -> None:
    body = page(client)
    assert seqs(body) == list(range(TOTAL - 49, TOTAL + 1))
    assert body["has_more"] is True
    newest = body["messages"][-1]
    assert newest == {
        "conv": "c1",
        "seq": TOTAL,
        "id": newest["id"],
        "sender": "bob",
        "client_msg_id": f"m{TOTAL}",
        "body": f"hello {TOTAL}",
        "attachments": [],
        "ts": newest["ts"],
    }
    assert isinstance(newest["id"], str) and newest["id"]


def test_message_payload_round_trips_attachments(client: FlaskClient, filled: Store) -> None:
    body = page(client, "?after=6&limit=1")
    assert body["messages"][0]["attachments"] == [{"n": 7}]
    assert body["messages"][0]["sender"] == "alice"


def test_walk_backwards_collects_every_seq_once(client: FlaskClient, filled: Store) -> None:
    collected: list[int] = []
    body = page(client, "?limit=37")
    while True:
        got = seqs(body)
        assert got == sorted(got) and len(got) <= 37
        collected = got + collected
        if not body["has_more"]:
            break
        body = page(client, f"?before={got[0]}&limit=37")
    assert collected == list(range(1, TOTAL + 1))


def test_walk_forwards_collects_every_seq_once(client: FlaskClient, filled: Store) -> None:
    collected: list[int] = []
    cursor = 0
    while True:
        body = page(client, f"?after={cursor}&limit=200")
        got = seqs(body)
        assert got == list(range(cursor + 1, cursor + 1 + len(got)))  # ascending, no gap
        collected += got
        if not body["has_more"]:
            break
        cursor = got[-1]
    assert collected == list(range(1, TOTAL + 1))
    # Caught up: nothing newer, and saying so.
    assert page(client, f"?after={TOTAL}") == {"messages": [], "has_more": False, "last_seq": TOTAL, "first_seq": 1}


def test_page_edges(client: FlaskClient, filled: Store) -> None:
    assert seqs(page(client, "?before=1")) == []
    first = page(client, "?before=4")
    assert seqs(first) == [1, 2, 3] and first["has_more"] is False
    assert page(client, "?limit=200")["has_more"] is True
    assert len(seqs(page(client, "?limit=200"))) == 200
    assert page(client, "?before=201&limit=200")["has_more"] is False


def test_empty_conversation(client: FlaskClient, store: Store) -> None:
    response = client.get("/v1/conversations/c2/messages", headers=ALICE)
    assert response.get_json() == {"messages": [], "has_more": False, "last_seq": 0, "first_seq": 1}


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=201",
        "?limit=abc",
        "?limit=-1",
        "?limit=",
        "?limit=1.5",
        "?before=0",
        "?before=-3",
        "?before=abc",
        "?after=-1",
        "?after=x",
        "?befor=10",
        "?view=poll",
        "?view=",
    ],
)
def test_bad_parameters(client: FlaskClient, filled: Store, query: str) -> None:
    error = assert_error(client.get(f"/v1/conversations/c1/messages{query}", headers=ALICE), 400, "bad_request")
    name = query[1:].split("=")[0]
    assert name in error["message"]


def test_before_and_after_together(client: FlaskClient, filled: Store) -> None:
    response = client.get("/v1/conversations/c1/messages?before=10&after=2", headers=ALICE)
    error = assert_error(response, 400, "bad_request")
    assert "either before or after" in error["message"]


def test_non_member_is_forbidden(client: FlaskClient, filled: Store) -> None:
    assert_error(client.get("/v1/conversations/c1/messages", headers=bearer("carol")), 403, "forbidden")
    assert_error(client.get("/v1/conversations/c2/messages", headers=bearer("bob")), 403, "forbidden")


def test_removed_member_loses_access(client: FlaskClient, filled: Store) -> None:
    headers = bearer("bob")
    assert page(client, headers=headers)["messages"]
    filled.remove_member("c1", "bob")
    assert_error(client.get("/v1/conversations/c1/messages", headers=headers), 403, "forbidden")


@pytest.mark.parametrize("conv", ["nope", "bad$id", "x" * 65, "%2B"])
def test_unknown_or_invalid_conversation_is_404(client: FlaskClient, store: Store, conv: str) -> None:
    assert_error(client.get(f"/v1/conversations/{conv}/messages", headers=ALICE), 404, "not_found")
