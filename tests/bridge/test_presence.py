"""Device presence through a real Mosquitto and Redis: retained per-user presence out."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.presence import Presence
from tests.bridge.devices import Device

pytestmark = pytest.mark.timeout(60)


def status(payloads: list[dict[str, object]]) -> list[object]:
    return [p["status"] for p in payloads]


def test_online_is_published_retained_and_explicit_offline_follows(
    bridge: Bridge, device: Callable[..., Device]
) -> None:
    watcher = device("watcher", ["presence/alice"])
    phone = device("alice-phone")
    phone.publish("presence/alice/phone", {"status": "online", "conn": "k1"})
    (online,) = watcher.wait_count("presence/alice", 1)
    assert online["user"] == "alice" and online["status"] == "online" and online["last_seen"] > 0

    late = device("late", ["presence/alice"])  # subscribes afterwards: gets the retained state
    late.wait_count("presence/alice", 1)
    assert late.received[0].retain and late.on("presence/alice")[0]["status"] == "online"

    phone.publish("presence/alice/phone", {"status": "offline", "conn": "k1"})
    assert status(watcher.wait_count("presence/alice", 2)) == ["online", "offline"]


def test_stale_offline_from_a_replaced_connection_is_ignored(
    bridge: Bridge, device: Callable[..., Device], redis_client: redis.Redis
) -> None:
    watcher = device("watcher", ["presence/+"])
    phone = device("alice-phone")
    phone.publish("presence/alice/phone", {"status": "online", "conn": "old"})
    phone.publish("presence/alice/phone", {"status": "online", "conn": "new"})  # reconnected
    phone.publish("presence/alice/phone", {"status": "offline", "conn": "old"})  # the old will, late
    # Presence events are handled in order, so bob's transitions arriving prove alice's were handled.
    bobs = device("bob-phone")
    bobs.publish("presence/bob/phone", {"status": "online", "conn": "b1"})
    bobs.publish("presence/bob/phone", {"status": "offline", "conn": "b1"})
    watcher.wait_count("presence/bob", 2)
    assert status(watcher.on("presence/alice")) == ["online"]
    assert Presence(redis_client, 60_000).get("alice", 0).online


def test_bad_presence_payloads_are_dropped(bridge: Bridge, device: Callable[..., Device]) -> None:
    watcher = device("watcher", ["presence/+"])
    phone = device("alice-phone")
    for bad in (b"online", b"{}", b'{"status": "away", "conn": "k"}', b'{"status": "online"}',
                b'{"status": "online", "conn": "k", "extra": 1}'):  # fmt: skip
        phone.publish("presence/alice/phone", bad)
    phone.publish("presence/bob/phone", {"status": "online", "conn": "b1"})
    watcher.wait_count("presence/bob", 1)
    assert watcher.on("presence/alice") == []


@pytest.fixture
def fast_heartbeat(settings: Settings) -> Settings:
    return settings.model_copy(update={"heartbeat_interval_s": 0.2})  # offline after 0.5 s


def test_missed_heartbeats_take_the_user_offline(
    start_bridge: Callable[..., Bridge], fast_heartbeat: Settings, device: Callable[..., Device]
) -> None:
    start_bridge(settings=fast_heartbeat)
    watcher = device("watcher", ["presence/alice"])
    phone = device("alice-phone")
    phone.publish("presence/alice/phone", {"status": "online", "conn": "k1"})
    watcher.wait_count("presence/alice", 1)
    # no more heartbeats: the sweeper (every second) notices the passed deadline
    assert status(watcher.wait_count("presence/alice", 2, timeout=5)) == ["online", "offline"]


def test_heartbeats_keep_the_user_online(
    start_bridge: Callable[..., Bridge], fast_heartbeat: Settings, device: Callable[..., Device]
) -> None:
    start_bridge(settings=fast_heartbeat)
    watcher = device("watcher", ["presence/alice", "presence/bob"])
    phone, bobs = device("alice-phone"), device("bob-phone")
    bobs.publish("presence/bob/phone", {"status": "online", "conn": "b1"})
    phone.publish("presence/alice/phone", {"status": "online", "conn": "k1"})
    # bob stops beating and goes offline; alice beats on and must stay online meanwhile
    deadline = time.monotonic() + 5
    while len(watcher.on("presence/bob")) < 2:
        assert time.monotonic() < deadline, "bob never went offline"
        phone.publish("presence/alice/phone", {"status": "online", "conn": "k1"})
        time.sleep(0.1)
    assert status(watcher.on("presence/bob")) == ["online", "offline"]
    assert status(watcher.on("presence/alice")) == ["online"]
