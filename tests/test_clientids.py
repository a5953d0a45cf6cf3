"""Client id claims for RabbitMQ (chatmq.core.clientids) on a private Redis: each id is its first
user's, for a lifetime renewed at every login with it, and indexed per user so the session guard
reads only the queues of the users a change concerns."""

from __future__ import annotations

import time

import pytest
import redis

from chatmq.core.clientids import ClientIds

pytestmark = pytest.mark.timeout(30)
TTL_S = 3 * 24 * 3600


def test_a_claim_is_its_first_users_and_lives_from_the_last_login(redis_client: redis.Redis) -> None:
    ids = ClientIds(redis_client, TTL_S)
    assert ids.claim("alice.phone", "alice")
    assert not ids.claim("alice.phone", "bob")
    key = "chatmq:client-owner:alice.phone"
    assert TTL_S - 5 <= redis_client.ttl(key) <= TTL_S
    redis_client.expire(key, 60)  # most of its life gone: the next login renews it
    assert ids.claim("alice.phone", "alice")
    assert redis_client.ttl(key) > TTL_S - 5
    redis_client.delete(key)  # expired: free again
    assert ids.claim("alice.phone", "bob") and ids.owners(["alice.phone"]) == {"alice.phone": "bob"}


def test_each_users_client_ids_without_a_scan(redis_client: redis.Redis) -> None:
    ids = ClientIds(redis_client, TTL_S)
    for client_id, user in (("alice.phone", "alice"), ("alice.web", "alice"), ("bob.phone", "bob")):
        assert ids.claim(client_id, user)
    assert sorted(ids.of_user("alice")) == ["alice.phone", "alice.web"] and ids.of_user("carol") == []
    redis_client.delete("chatmq:client-owner:alice.web")  # its claim expired...
    assert ids.claim("alice.web", "bob")  # ...and bob took the id: it is no longer alice's
    assert ids.of_user("alice") == ["alice.phone"] and sorted(ids.of_user("bob")) == ["alice.web", "bob.phone"]
    stale = int(time.time() * 1000) - 1
    redis_client.zadd("chatmq:client-ids-of:alice", {"alice.old": stale})  # an index entry past its time
    redis_client.set("chatmq:client-owner:alice.old", "alice")
    assert ids.of_user("alice") == ["alice.phone"]
    ids.claim("alice.tablet", "alice")  # writing the index prunes what expired
    assert redis_client.zscore("chatmq:client-ids-of:alice", "alice.old") is None


def test_the_sweep_renews_claims_made_before_they_expired(redis_client: redis.Redis) -> None:
    """Claims from before lifetimes existed (no TTL, in no index) get both from the guard's sweep."""
    redis_client.set("chatmq:client-owner:old.device", "dave")
    ids = ClientIds(redis_client, TTL_S)
    assert ids.of_user("dave") == []
    ids.renew(ids.owners(["old.device", "unclaimed"]))
    assert redis_client.ttl("chatmq:client-owner:old.device") > TTL_S - 5
    assert ids.of_user("dave") == ["old.device"]


def test_redis_unreachable_raises() -> None:
    """The login hook refuses the login then (tests/api/test_rabbitmq_hooks.py)."""
    down = redis.Redis(port=1, socket_connect_timeout=0.5)
    with pytest.raises(redis.RedisError):
        ClientIds(down).claim("alice.phone", "alice")
