"""The access cases (tests/access_cases.py) against ``authorize()`` and the EMQX and RabbitMQ hooks.

The hooks are asked over their HTTP interfaces the way EMQX and RabbitMQ 3.10 ask; neither has a
RECEIVE or WILL question (they check subscriptions once, and a will as a publish), so they answer
the PUBLISH and SUBSCRIBE cases. The live brokers run the same cases in tests/broker,
tests/mosquitto_broker and tests/rabbit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from chatmq.api.app import create_app
from chatmq.api.brokerhooks.emqx import SECRET_HEADER
from chatmq.core.access import RULES, Action, Identity, authorize, find_rule
from chatmq.core.auth import hash_password
from chatmq.core.config import ADMIN_USER, Settings
from chatmq.core.store import open_store
from tests.access_cases import CASES, PASSWORD, Case, WorldMembership, seed
from tests.rabbitmq_hooks import HOOK_AUTH, routing_key

pytestmark = pytest.mark.timeout(60)
HOOK_SECRET = "emqx-hook-secret-0123456789"
HOOK_CASES = [case for case in CASES if case.action in (Action.PUBLISH, Action.SUBSCRIBE)]


def _identity(user: str) -> Identity:
    return Identity(user, is_admin=user == ADMIN_USER)


def test_every_case_is_what_authorize_decides() -> None:
    membership = WorldMembership()
    wrong = [
        case
        for case in CASES
        if authorize(_identity(case.user), case.action, case.topic, membership) is not case.allowed
    ]
    assert wrong == []


def test_the_cases_cover_every_action_and_every_rule() -> None:
    assert {case.action for case in CASES} == set(Action)
    covered = {found[0] for case in CASES if (found := find_rule(case.topic, wildcard=case.action is Action.SUBSCRIBE))}
    assert covered == set(RULES)


@pytest.fixture
def hooks(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[FlaskClient]:
    settings = Settings(
        data_dir=tmp_path,
        secret_key="parity-secret-0123456789abcdef0123",
        redis_url=redis_url,
        emqx_hook_secret=HOOK_SECRET,
        rabbitmq_hook_secret=HOOK_AUTH[1],
        membership_refresh_s=0.0,
    )
    store = open_store(settings.resolved_store_url)
    seed(store, hash_password(PASSWORD))
    yield create_app(settings, store=store, redis_client=redis_client).test_client()
    store.close()


def test_the_emqx_hook_answers_every_case(hooks: FlaskClient) -> None:
    def answer(case: Case) -> bool:
        body = {
            "username": case.user,
            "clientid": f"{case.user}-phone",
            "topic": case.topic,
            "action": case.action.value,
            "qos": "1",
            "retain": "false",
        }
        response = hooks.post("/v1/emqx/authz", json=body, headers={SECRET_HEADER: HOOK_SECRET})
        assert response.status_code == 200
        return response.get_json()["result"] == "allow"

    assert [case for case in HOOK_CASES if answer(case) is not case.allowed] == []


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_the_rabbitmq_topic_hook_answers_every_case(hooks: FlaskClient, method: str) -> None:
    """As RabbitMQ 3.10 asks: the routing key of the topic (``/`` as ``.``, ``+`` as ``*``), a
    form-encoded POST body (``auth_http.http_method = post``) or a GET query string (its default)."""

    def answer(case: Case) -> bool:
        fields = {
            "username": case.user,
            "vhost": "/",
            "resource": "topic",
            "name": "amq.topic",
            "permission": "write" if case.action is Action.PUBLISH else "read",
            "routing_key": routing_key(case.topic),
            "variable_map.client_id": f"{case.user}.phone",
            "variable_map.username": case.user,
            "variable_map.vhost": "/",
        }
        if method == "POST":
            response = hooks.post("/v1/rabbitmq/topic", data=fields, auth=HOOK_AUTH)
        else:
            response = hooks.get("/v1/rabbitmq/topic", query_string=fields, auth=HOOK_AUTH)
        assert response.status_code == 200 and response.mimetype == "text/plain"
        assert response.text in ("allow", "deny")
        return response.text == "allow"

    assert [case for case in HOOK_CASES if answer(case) is not case.allowed] == []
