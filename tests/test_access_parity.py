"""The access cases (tests/access_cases.py) against ``authorize()`` and the EMQX authorization hook.

The hook is asked over its HTTP interface the way EMQX asks; EMQX has no RECEIVE or WILL question
(it checks subscriptions once, and a will as a publish), so it answers the PUBLISH and SUBSCRIBE
cases. The live brokers run the same cases in tests/broker and tests/mosquitto_broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from api.app import create_app
from api.emqx import SECRET_HEADER
from chatcore.access import RULES, Action, Identity, authorize, find_rule
from chatcore.auth import hash_password
from chatcore.config import ADMIN_USER, Settings
from chatcore.store import open_store
from tests.access_cases import CASES, PASSWORD, Case, WorldMembership, seed

pytestmark = pytest.mark.timeout(60)
HOOK_SECRET = "emqx-hook-secret-0123456789"


def _identity(user: str) -> Identity:
    return Identity(user, is_admin=user == ADMIN_USER)


def test_every_case_is_what_authorize_decides() -> None:
    membership = WorldMembership()
    wrong = [case for case in CASES if authorize(_identity(case.user), case.action, case.topic, membership)
             is not case.allowed]
    assert wrong == []


def test_the_cases_cover_every_action_and_every_rule() -> None:
    assert {case.action for case in CASES} == set(Action)
    covered = {found[0] for case in CASES if (found := find_rule(case.topic, wildcard=case.action is Action.SUBSCRIBE))}
    assert covered == set(RULES)


@pytest.fixture
def emqx(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[FlaskClient]:
    settings = Settings(data_dir=tmp_path, secret_key="parity-secret-0123456789abcdef0123", redis_url=redis_url,
                        emqx_hook_secret=HOOK_SECRET, membership_refresh_s=0.0)
    store = open_store(settings.resolved_store_url)
    seed(store, hash_password(PASSWORD))
    yield create_app(settings, store=store, redis_client=redis_client).test_client()
    store.close()


def test_the_emqx_hook_answers_every_case(emqx: FlaskClient) -> None:
    def answer(case: Case) -> bool:
        body = {"username": case.user, "clientid": f"{case.user}-phone", "topic": case.topic,
                "action": case.action.value, "qos": "1", "retain": "false"}
        response = emqx.post("/v1/emqx/authz", json=body, headers={SECRET_HEADER: HOOK_SECRET})
        assert response.status_code == 200
        return response.get_json()["result"] == "allow"

    asked = [case for case in CASES if case.action in (Action.PUBLISH, Action.SUBSCRIBE)]
    assert [case for case in asked if answer(case) is not case.allowed] == []
