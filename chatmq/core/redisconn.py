"""One way to open Redis for every process: a single server or a Redis Cluster, chosen by URL.

``redis://host:port/db`` is one server; ``redis+cluster://host:port`` is a cluster reached through
any of its nodes. All chatmq keys are hash-tagged per user (or per bucket) and no command or script
spans two slots, so the same code runs on both.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

CLUSTER_SCHEME = "redis+cluster://"


def connect(url: str, **options: Any) -> redis.Redis | RedisCluster:
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME), **options)
    return redis.Redis.from_url(url, **options)


def connect_async(url: str, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    """The asyncio flavour, for the broker's event loop."""
    if url.startswith(CLUSTER_SCHEME):
        return AsyncRedisCluster.from_url("redis://" + url.removeprefix(CLUSTER_SCHEME), **options)
    return aioredis.Redis.from_url(url, **options)
