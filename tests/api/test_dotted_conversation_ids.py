"""Conversation ids with a '.' where the broker is RabbitMQ (issue 22): its MQTT plugin turns a topic's
'/' into '.' without escaping a '.' inside a level, so ``chat/team.typing/msg`` would be routed as
``chat/team/typing/msg`` and reach the members of ``team``. Every way of creating a conversation
refuses such an id there with the code ``dotted_id``; elsewhere they stay valid ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from chatmq.cli.main import cli
from chatmq.core.config import Settings
from chatmq.core.store import Store
from tests.api.helpers import SECRET, assert_error, bearer
from tests.api.test_admin import admin_headers

pytestmark = pytest.mark.timeout(60)


def test_the_rule_follows_the_configured_broker() -> None:
    assert Settings().dotted_conversation_ids
    assert not Settings(rabbitmq_hook_secret="s").dotted_conversation_ids
    assert not Settings(rabbitmq_management_url="http://guard:pw@rabbit:15672").dotted_conversation_ids
    assert not Settings(conversation_ids_with_dots=False).dotted_conversation_ids  # keep it movable to RabbitMQ
    assert Settings(rabbitmq_hook_secret="s", conversation_ids_with_dots=True).dotted_conversation_ids


@pytest.mark.parametrize("rabbitmq", [True, False], ids=["rabbitmq", "other-brokers"])
def test_api_and_admin_api(make_app: Callable[..., Flask], store: Store, rabbitmq: bool) -> None:
    client = make_app(rabbitmq_hook_secret="hook-secret" if rabbitmq else None).test_client()
    created = client.post("/v1/conversations", json={"id": "team.typing", "members": ["bob"]},
                          headers=bearer("alice"))
    by_admin = client.post("/v1/admin/conversations", json={"id": "ops.1", "members": ["alice", "carol"]},
                           headers=admin_headers())
    imported = client.post("/v1/admin/conversations/import", headers=admin_headers(), json={"conversations": [
        {"id": "imported.x", "members": ["alice"]}, {"id": "imported-y", "members": ["alice"]},
        {"id": "c1", "members": ["alice", "carol"]}]})  # an existing conversation still gains members
    assert imported.status_code == 200, imported.text
    if rabbitmq:
        error = assert_error(created, 400, "dotted_id")
        assert "'team.typing'" in error["message"] and "RabbitMQ" in error["message"]
        assert_error(by_admin, 400, "dotted_id")
        assert imported.json["created"] == 1 and imported.json["updated"] == 1
        assert [(e["index"], "contains '.'" in e["error"]) for e in imported.json["errors"]] == [(0, True)]
        assert [store.get_conversation(c) for c in ("team.typing", "ops.1", "imported.x")] == [None] * 3
        undotted = client.post("/v1/conversations", json={"id": "team-typing", "members": ["bob"]},
                               headers=bearer("alice"))
        assert undotted.status_code == 201, undotted.text
    else:
        assert (created.status_code, by_admin.status_code) == (201, 201)
        assert imported.json["created"] == 2 and imported.json["errors"] == []
    assert "carol" in store.get_conversation("c1").members  # type: ignore[union-attr]
    random_id = client.post("/v1/conversations", json={"members": ["bob"]}, headers=bearer("alice"))
    assert random_id.status_code == 201  # the ids the API picks itself never have a dot


def test_local_cli_create_and_import(store: Store, data_dir: Path, redis_url: str, tmp_path: Path) -> None:
    env = {"CHATMQ_DATA_DIR": str(data_dir), "CHATMQ_STORE_URL": "sqlite:///" + str(tmp_path / "chatmq.db"),
           "CHATMQ_SECRET_KEY": SECRET, "CHATMQ_REDIS_URL": redis_url, "CHATMQ_RABBITMQ_HOOK_SECRET": "hook-secret"}
    runner = CliRunner()
    refused = runner.invoke(cli, ["conv", "create", "--id", "team.typing", "--members", "alice,bob"], env=env)
    assert refused.exit_code == 1, refused.output
    assert "contains '.'" in refused.output and "RabbitMQ" in refused.output
    assert store.get_conversation("team.typing") is None
    rows = tmp_path / "convs.csv"
    rows.write_text("id,title,members\nbad.one,,alice bob\ngood-one,,alice bob\n")
    imported = runner.invoke(cli, ["conv", "import", str(rows)], env=env)
    assert imported.exit_code == 1 and "1 created" in imported.output and "line 2: conversation id 'bad.one'" \
        in imported.output, imported.output
    allowed = runner.invoke(cli, ["conv", "create", "--id", "team.typing", "--members", "alice,bob"],
                            env={**env, "CHATMQ_CONVERSATION_IDS_WITH_DOTS": "true"})
    assert allowed.exit_code == 0, allowed.output
    assert store.get_conversation("team.typing") is not None
