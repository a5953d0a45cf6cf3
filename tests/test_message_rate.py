"""MessageRate (chatmq/core/ratelimit.py) against a real Redis: the token bucket per sender, in order
within a batch, and a script Redis lost (restart, SCRIPT FLUSH) loaded again without a refusal."""

from __future__ import annotations

from typing import Any

import redis

from chatmq.core import redisconn
from chatmq.core.ratelimit import MessageRate


def test_a_batch_is_decided_in_order_per_sender(redis_client: redis.Redis) -> None:
    rate = MessageRate(redis_client, rate_per_s=0.001, burst=2, what="test-order")
    assert rate.allow(["ann", "ann", "bob", "ann", "bob", "bob"]) == [True, True, True, False, True, False]
    assert rate.allow(["ann", "cat"]) == [False, True]


def test_a_flushed_script_is_loaded_again(redis_client: redis.Redis) -> None:
    rate = MessageRate(redis_client, rate_per_s=0.001, burst=3, what="test-flush")
    assert rate.allow(["dan"]) == [True]
    redis_client.script_flush()
    assert rate.allow(["dan", "dan", "dan"]) == [True, True, False]  # the bucket itself was kept


def test_off_allows_everything_without_redis() -> None:
    rate = MessageRate(redis.Redis(port=1), rate_per_s=0, burst=1)
    assert rate.allow(["x", "x", "x"]) == [True, True, True]


def test_redis_down_fails_open() -> None:
    rate = MessageRate(redis.Redis(port=1, socket_connect_timeout=0.2), rate_per_s=1, burst=1)
    assert rate.allow(["x", "x"]) == [True, True]


def test_on_a_redis_cluster(redis_cluster: Any) -> None:
    """One key per sender, each with its own hash tag: EVALSHA is routed by key to its slot's node,
    and the script is loaded on every primary."""
    client = redisconn.connect(redis_cluster.url)
    rate = MessageRate(client, rate_per_s=0.001, burst=1, what="test-cluster")
    senders = [f"user-{i}" for i in range(20)]  # spread over the three primaries
    assert rate.allow(senders + senders) == [True] * 20 + [False] * 20
