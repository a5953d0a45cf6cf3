"""Presence transitions on a real Redis, and the same on a real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.core.presence import Presence, TooManyDevices, deadline_key
from chatmq.core.redisconn import connect

TTL = 1000


@pytest.fixture(params=["single", "cluster"])
def presence(request: pytest.FixtureRequest, redis_server: LocalRedis) -> Iterator[Presence]:
    if request.param == "single":
        client = connect(redis_server.url)
        client.flushall()
    else:
        client = connect(request.getfixturevalue("redis_cluster").url)
        client.flushall(target_nodes="primaries")
    yield Presence(client, TTL)
    client.close()


USERS = [f"user{i}" for i in range(40)]  # spread over every slot range and deadline bucket


def test_online_offline_transitions_report_only_changes(presence: Presence) -> None:
    for user in USERS:
        change = presence.device_online(user, "phone", "c1", 1_000)
        assert change is not None and change.online and change.last_seen == 1_000
        assert presence.device_online(user, "phone", "c1", 1_500) is None  # heartbeat: no change
        assert presence.device_online(user, "tablet", "c2", 1_600) is None  # second device
        assert presence.device_offline(user, "phone", "c1", 1_700) is None  # tablet keeps it online
        change = presence.device_offline(user, "tablet", "c2", 1_800)
        assert change is not None and not change.online and change.last_seen == 1_800
        assert not presence.get(user, 1_900).online


def test_stale_will_from_replaced_connection_is_ignored(presence: Presence) -> None:
    presence.device_online("ann", "phone", "new-conn", 1_000)
    assert presence.device_offline("ann", "phone", "old-conn", 1_100) is None
    assert presence.get("ann", 1_200).online


def test_sweep_expires_silent_devices_in_every_bucket(presence: Presence) -> None:
    for user in USERS:
        presence.device_online(user, "phone", "c", 1_000)
    presence.device_online(USERS[0], "phone", "c", 1_900)  # a heartbeat moves one deadline on
    assert presence.expire(1_500) == []  # nothing due yet
    changes = presence.expire(2_100)  # deadlines were 2_000; USERS[0]'s is 2_900
    assert sorted(c.user for c in changes) == sorted(USERS[1:])
    assert all(not c.online for c in changes)
    assert presence.get(USERS[0], 2_100).online
    assert [c.user for c in presence.expire(3_000)] == [USERS[0]]
    assert presence.expire(10_000) == []  # the index is clean: nothing expires twice


def test_sweep_keeps_a_device_whose_heartbeat_races_it(presence: Presence) -> None:
    presence.device_online("bea", "phone", "c", 1_000)  # deadline 2_000
    presence.device_online("bea", "phone", "c", 1_950)  # deadline 2_950, before the sweep looks
    assert presence.expire(2_100) == []
    assert presence.get("bea", 2_100).online
    assert [c.user for c in presence.expire(3_000)] == ["bea"]


def test_a_user_holds_at_most_devices_per_user_devices(presence: Presence) -> None:
    """A heartbeat of a new device id beyond the limit is refused and stores nothing: one account
    cannot make presence hold an unbounded number of keys (1,000 ids of 50 KB pinned 50 MB before)."""
    presence.devices_per_user = 3
    for device in ("phone", "tablet", "laptop"):
        presence.device_online("ann", device, "c", 1_000)
    with pytest.raises(TooManyDevices) as refused:
        presence.device_online("ann", "junk-1", "c", 1_100)
    assert (refused.value.user, refused.value.device, refused.value.limit) == ("ann", "junk-1", 3)
    dev_key = "chatmq:pres:{ann}:dev"
    assert sorted(presence._redis.hkeys(dev_key)) == [b"laptop", b"phone", b"tablet"]
    assert presence._redis.zscore(deadline_key("ann"), "ann/junk-1") is None
    assert presence.device_online("ann", "phone", "c", 1_200) is None  # a known device's heartbeat goes on
    presence.device_offline("ann", "laptop", "c", 1_300)  # one leaves: its place is free
    presence.device_online("ann", "watch", "c", 1_400)
    with pytest.raises(TooManyDevices):
        presence.device_online("ann", "junk-2", "c", 1_500)
    # devices whose heartbeat deadline passed (not swept yet) give their places up to a new one
    presence.device_online("ann", "watch", "c", 2_500)  # the others' deadlines were 2_000 and 2_200
    presence.device_online("ann", "desktop", "c", 2_500)
    assert sorted(presence._redis.hkeys(dev_key)) == [b"desktop", b"watch"]
    presence.device_online("bob", "phone", "c", 2_500)  # per user: others are not affected
