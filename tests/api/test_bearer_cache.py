"""The per-worker cache of verified tokens (chatmq/api/bearer.py) must never let through what the
uncached check refuses: expiry, another signing key, revocation and disabled users still count."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api import bearer as bearer_module
from chatmq.core.auth import token_claims
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store
from tests.api.helpers import SECRET, assert_error, bearer

HISTORY = "/v1/conversations/c1/messages"


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def test_a_verified_token_is_remembered(client: FlaskClient) -> None:
    headers = bearer("alice")
    assert client.get(HISTORY, headers=headers).status_code == 200
    assert (SECRET, _token(headers)) in bearer_module._verified
    assert client.get(HISTORY, headers=headers).status_code == 200


def test_a_remembered_token_is_refused_once_it_expires(client: FlaskClient) -> None:
    headers = bearer("alice", ttl_s=2)  # exp is whole seconds: at least 1 s from now
    assert client.get(HISTORY, headers=headers).status_code == 200
    claims = token_claims(SECRET, _token(headers))
    assert claims is not None
    while time.time() < claims["exp"]:
        time.sleep(0.05)
    assert (SECRET, _token(headers)) in bearer_module._verified
    assert_error(client.get(HISTORY, headers=headers), 401, "unauthorized")


def test_a_remembered_token_is_refused_under_another_key(make_app: Callable[..., Flask]) -> None:
    headers = bearer("alice")
    assert make_app().test_client().get(HISTORY, headers=headers).status_code == 200
    other = make_app(secret_key="a-rotated-signing-key-of-at-least-32-bytes").test_client()
    assert_error(other.get(HISTORY, headers=headers), 401, "unauthorized")


def test_revoking_a_remembered_token_takes_effect_at_once(client: FlaskClient, redis_client: redis.Redis) -> None:
    headers = bearer("alice")
    assert client.get(HISTORY, headers=headers).status_code == 200
    claims = token_claims(SECRET, _token(headers))
    assert claims is not None
    assert TokenRevocations(redis_client, 3600).revoke_token(claims)
    assert_error(client.get(HISTORY, headers=headers), 401, "unauthorized")


def test_disabling_the_user_of_a_remembered_token_takes_effect_at_once(client: FlaskClient, store: Store) -> None:
    headers = bearer("bob")
    assert client.get(HISTORY, headers=headers).status_code == 200
    store.set_disabled("bob", True)
    assert_error(client.get(HISTORY, headers=headers), 401, "unauthorized")


def test_the_cache_is_bounded(client: FlaskClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bearer_module, "MAX_VERIFIED_TOKENS", 3)
    for _ in range(5):
        assert client.get(HISTORY, headers=bearer("alice")).status_code == 200
        assert len(bearer_module._verified) <= 3
