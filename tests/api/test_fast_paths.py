"""The history path's speed-ups keep the behaviour they replace: the cached query schema is the
schema pydantic builds, and orjson-encoded responses decode to what Flask's ``json`` produced."""

from __future__ import annotations

import datetime
import json

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask.testing import FlaskClient
from pydantic import BaseModel

from chatmq.api.conversations import HistoryQuery
from chatmq.core.store import NewMessage, Store
from tests.api.helpers import bearer


def test_the_query_schema_is_built_once_and_is_pydantics() -> None:
    first = HistoryQuery.model_json_schema()
    assert HistoryQuery.model_json_schema() is first
    assert first == BaseModel.model_json_schema.__func__(HistoryQuery)  # type: ignore[attr-defined]
    # With arguments (how the OpenAPI document is generated) a fresh schema is built.
    assert HistoryQuery.model_json_schema(ref_template="#/components/schemas/{model}") is not first


def test_orjson_responses_match_the_standard_library(app: Flask) -> None:
    value = {
        "text": "naïve ☕ \u2028",
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "keys": {1: "one"},
        "nested": [1.5, None, True],
    }
    standard = DefaultJSONProvider(app)
    standard.sort_keys = False
    with app.app_context():
        fast = app.json.response(value).get_data()
    assert json.loads(fast) == json.loads(standard.dumps(value))
    assert json.loads(fast)["when"] == "Fri, 02 Jan 2026 03:04:05 GMT"  # Flask's HTTP date, not ISO 8601


def test_history_pages_are_unchanged(client: FlaskClient, store: Store) -> None:
    store.append([NewMessage("c1", "alice", f"m{i}", f"hello ☕ {i}", 1_000 + i) for i in range(60)])
    page = client.get("/v1/conversations/c1/messages?before=30&limit=5", headers=bearer("bob")).get_json()
    assert [m["seq"] for m in page["messages"]] == [25, 26, 27, 28, 29]
    assert page["messages"][0]["body"] == "hello ☕ 24"
    assert page["has_more"] is True
    assert list(page["messages"][0]) == ["conv", "seq", "id", "sender", "client_msg_id", "body", "attachments", "ts"]
