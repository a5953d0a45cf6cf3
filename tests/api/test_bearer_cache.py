"""The per-worker cache of verified tokens (chatmq/api/bearer.py) and the memory of revocation checks
(chatmq.core.revocation.RevocationMemory) must never let through what the uncached check refuses:
expiry, another signing key, revocation (made here or by another process) and disabled users still
count, and without Redis a token is refused as before."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api import bearer as bearer_module
from chatmq.api.context import get_context
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import token_claims
from chatmq.core.revocation import RevocationMemory, TokenRevocations
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


# --- revocation checks remembered while following chatmq:auth-changed (chatmq.core.revocation) ---


def _following(memory: RevocationMemory) -> RevocationMemory:
    deadline = time.monotonic() + 5
    while not memory.following:  # the server confirms the subscription asynchronously
        assert time.monotonic() < deadline, "never subscribed to chatmq:auth-changed"
        time.sleep(0.01)
    return memory


def _mgets(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))


def _claims(user: str) -> dict[str, Any]:
    claims = token_claims(SECRET, _token(bearer(user)))
    assert claims is not None
    return claims


def test_a_revocation_check_is_remembered_while_following(redis_client: redis.Redis) -> None:
    memory = _following(RevocationMemory(TokenRevocations(redis_client, 3600), redis_client))
    claims = _claims("alice")
    assert memory.is_revoked(claims) is False
    reads = _mgets(redis_client)
    assert [memory.is_revoked(claims) for _ in range(5)] == [False] * 5
    assert _mgets(redis_client) == reads  # answered from memory
    assert memory.is_revoked(_claims("bob")) is False  # another token: read from Redis
    assert _mgets(redis_client) == reads + 1
    memory.close()


def test_a_revoke_made_elsewhere_is_seen_at_the_next_check(redis_url: str, redis_client: redis.Redis) -> None:
    memory = _following(RevocationMemory(TokenRevocations(redis_client, 3600), redis_client))
    alice, bob = _claims("alice"), _claims("bob")
    assert memory.is_revoked(alice) is False and memory.is_revoked(bob) is False
    elsewhere = redis.Redis.from_url(redis_url)  # another process's connection: its own publish
    try:
        assert TokenRevocations(elsewhere, 3600).revoke_token(alice)
        assert memory.is_revoked(alice) is True
        TokenRevocations(elsewhere, 3600).revoke_user("bob")
        assert memory.is_revoked(bob) is True
    finally:
        elsewhere.close()
        memory.close()


def test_an_answer_is_remembered_for_at_most_max_age(redis_client: redis.Redis) -> None:
    memory = _following(RevocationMemory(TokenRevocations(redis_client, 3600), redis_client, max_age_s=0.2))
    claims = _claims("alice")
    memory.is_revoked(claims)
    reads = _mgets(redis_client)
    time.sleep(0.25)
    memory.is_revoked(claims)
    assert _mgets(redis_client) == reads + 1
    memory.close()


def test_without_redis_nothing_is_answered_from_memory(tmp_path: Path) -> None:
    """Redis gone: the subscription fails with it, and the check refuses (raises) as it did
    without a memory, even for a token answered from memory a moment before."""
    server = LocalRedis(tmp_path / "redis", persist=False).start()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    try:
        memory = _following(RevocationMemory(TokenRevocations(client, 3600), client))
        claims = _claims("alice")
        assert memory.is_revoked(claims) is False
        assert memory.is_revoked(claims) is False
    finally:
        server.stop()
    with pytest.raises(redis.RedisError):
        memory.is_revoked(claims)
    assert not memory.following
    client.close()


def test_the_api_sees_a_revoke_made_elsewhere_at_the_next_request(app: Flask, redis_url: str) -> None:
    client = app.test_client()
    headers = bearer("alice")
    _following(get_context(app).revocations)
    assert client.get(HISTORY, headers=headers).status_code == 200
    assert client.get(HISTORY, headers=headers).status_code == 200  # from memory
    elsewhere = redis.Redis.from_url(redis_url)
    try:
        claims = token_claims(SECRET, _token(headers))
        assert claims is not None
        TokenRevocations(elsewhere, 3600).revoke_token(claims)
    finally:
        elsewhere.close()
    assert_error(client.get(HISTORY, headers=headers), 401, "unauthorized")
