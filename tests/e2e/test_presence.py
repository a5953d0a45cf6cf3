"""Presence through real processes: online on connect, offline by last will on an abrupt close."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from tests.stack import RawClient, Stack


def test_presence_online_then_offline_by_last_will(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    watcher = RawClient(stack.mqtt_port, bob)
    try:
        assert watcher.subscribe(f"presence/{alice}")
        device = stack.client(alice, heartbeat_interval=1.0)
        online = json.loads(watcher.expect(f"presence/{alice}"))
        while online["status"] != "online":  # a retained offline from earlier may come first
            online = json.loads(watcher.expect(f"presence/{alice}"))
        assert online["user"] == alice
        token = stack.token(bob)
        assert stack.http("GET", f"/v1/presence/{alice}", token=token)[1]["status"] == "online"

        device.close(abrupt=True)  # socket dropped without DISCONNECT: the broker sends the will
        offline = json.loads(watcher.expect(f"presence/{alice}", timeout=5))
        assert offline["status"] == "offline" and offline["last_seen"] >= online["last_seen"]
        assert stack.http("GET", f"/v1/presence/{alice}", token=token)[1]["status"] == "offline"
        assert "offline" in stack.admin("presence", alice).stdout
    finally:
        watcher.close()


def test_late_will_of_a_replaced_connection_is_ignored(stack: Stack, unique: Callable[[str], str]) -> None:
    alice = unique("alice")
    stack.add_user(alice)
    device = stack.client(alice, device="phone", heartbeat_interval=1.0)
    try:
        stale = RawClient(stack.mqtt_port, alice, client_id=f"{alice}.stale")
        stale.publish(f"presence/{alice}/phone", b'{"status": "offline", "conn": "an-old-connection"}')
        stale.close()
        token = stack.token(alice)
        for _ in range(10):  # stays online across the stale will and later heartbeats
            status, body = stack.http("GET", f"/v1/presence/{alice}", token=token)
            assert status == 200 and body["status"] == "online"
            time.sleep(0.1)
    finally:
        device.close()


def test_presence_keeps_at_most_devices_per_user_devices_of_one_user(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    """A user heartbeating under 40 device ids gets 32 (CHATMQ_PRESENCE_DEVICES_PER_USER) into
    presence; the others are refused with a log line, and the user stays online."""
    alice = unique("alice")
    stack.add_user(alice)
    assert stack.redis_url is not None
    client = redis.Redis.from_url(stack.redis_url)
    device = RawClient(stack.mqtt_port, alice)
    try:
        conn = "c1"
        for n in range(40):
            device.publish(f"presence/{alice}/dev-{n}", json.dumps({"status": "online", "conn": conn}).encode())
        deadline = time.monotonic() + 10
        refusal = f"refused presence of {alice}/dev-32: 32 live devices already (CHATMQ_PRESENCE_DEVICES_PER_USER)"
        while refusal not in stack.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, stack.log()
            time.sleep(0.1)
        assert client.hlen(f"chatmq:pres:{{{alice}}}:dev") == 32
        assert stack.http("GET", f"/v1/presence/{alice}", token=stack.token(alice))[1]["status"] == "online"
    finally:
        device.close()
        client.close()
