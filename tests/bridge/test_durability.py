"""Nothing is acked before it is durable, nothing is lost when the store or the bridge is down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.liveness import BRIDGE_ALIVE_KEY
from chatmq.core.store import AppendResult, NewMessage, Store, StoreError, open_store
from tests.bridge.devices import Device
from tests.mosquitto import LocalMosquitto

pytestmark = pytest.mark.timeout(60)


class FlakyStore:
    """The real store, except that ``append`` raises while ``failing`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failing = threading.Event()
        self.failures = 0
        self._cond = threading.Condition()

    def append(self, batch: Sequence[NewMessage], **options: Any) -> list[AppendResult]:
        if self.failing.is_set():
            with self._cond:
                self.failures += 1
                self._cond.notify_all()
            raise StoreError("database is locked (simulated)")
        return self._store.append(batch, **options)

    def wait_failures(self, count: int, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.failures >= count, timeout), "append was not retried"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def send(dev: Device, conv: str, user: str, cmid: str) -> None:
    dev.publish(f"chat/{conv}/send/{user}", {"client_msg_id": cmid, "body": cmid})


def test_no_ack_while_the_store_fails_then_everything_is_acked(
    start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    flaky = FlakyStore(store)
    flaky.failing.set()
    start_bridge(store=flaky)
    watcher = device("watcher", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    for i in range(5):
        send(alice, "c1", "alice", f"m{i}")
    flaky.wait_failures(3)  # retried with backoff
    assert alice.on("user/alice/ack") == [] and watcher.received == []
    assert store.history("c1").messages == []

    flaky.failing.clear()
    acks = alice.wait_count("user/alice/ack", 5)
    assert [(a["client_msg_id"], a["status"], a["seq"]) for a in acks] == [
        (f"m{i}", "received", i + 1) for i in range(5)
    ]
    assert [m["seq"] for m in watcher.wait_count("chat/c1/msg", 5)] == [1, 2, 3, 4, 5]
    assert [m.client_msg_id for m in store.history("c1").messages] == [f"m{i}" for i in range(5)]


def test_restart_continues_seqs_and_sends_queued_while_down_are_delivered(
    start_bridge: Callable[..., Bridge], settings: Settings, store: Store, device: Callable[..., Device]
) -> None:
    first = start_bridge()
    alice = device("alice", ["user/alice/ack"])
    send(alice, "c1", "alice", "a")
    send(alice, "c1", "alice", "b")
    alice.wait_count("user/alice/ack", 2)
    first.stop()

    send(alice, "c1", "alice", "c")  # the bridge is down: its persistent session queues this
    send(alice, "c1", "alice", "b")  # and a resend of an acked message
    reopened = open_store(settings.resolved_store_url)  # a fresh process would open the file anew
    try:
        start_bridge(store=reopened)
        acks = alice.wait_count("user/alice/ack", 4)
        assert [(a["client_msg_id"], a["seq"]) for a in acks] == [("a", 1), ("b", 2), ("c", 3), ("b", 2)]
        send(alice, "c1", "alice", "d")
        assert alice.wait_count("user/alice/ack", 5)[-1]["seq"] == 4
        assert [m.client_msg_id for m in reopened.history("c1").messages] == ["a", "b", "c", "d"]
    finally:
        reopened.close()


def test_reconnects_after_the_broker_restarts(
    bridge: Bridge, mosquitto: LocalMosquitto, store: Store, device: Callable[..., Device]
) -> None:
    mosquitto.restart()  # persistence is off: the session is gone, the bridge must resubscribe
    deadline = time.monotonic() + 15
    while not bridge.connected:
        assert time.monotonic() < deadline, "bridge did not reconnect"
        time.sleep(0.05)
    alice = device("alice", ["user/alice/ack"])
    send(alice, "c1", "alice", "after-restart")
    assert alice.wait_count("user/alice/ack", 1, timeout=15)[0]["seq"] == 1


def test_a_broker_outage_logs_no_error_per_reconnect_attempt(
    bridge: Bridge, mosquitto: LocalMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mosquitto.stop()
    time.sleep(3.5)  # reconnect attempts 1 s apart fail meanwhile
    mosquitto.start()
    deadline = time.monotonic() + 15
    while not bridge.connected:
        assert time.monotonic() < deadline, "bridge did not reconnect"
        time.sleep(0.05)
    bridge.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # a failed attempt is an INFO line with the next delay, not an error
    assert any("bridge lost the broker" in r.getMessage() for r in caplog.records)


def test_liveness_key_is_set_while_connected(bridge: Bridge, redis_client: redis.Redis) -> None:
    deadline = time.monotonic() + 5
    while redis_client.get(BRIDGE_ALIVE_KEY) is None:
        assert time.monotonic() < deadline, "bridge never set its liveness key"
        time.sleep(0.05)
    assert 0 < redis_client.pttl(BRIDGE_ALIVE_KEY) <= 5000
    bridge.stop()
    redis_client.pexpire(BRIDGE_ALIVE_KEY, 1)  # age it out at once rather than sleeping 5 s
    time.sleep(1.5)  # more than one beat interval: a stopped bridge must not beat again
    assert redis_client.get(BRIDGE_ALIVE_KEY) is None


def test_sends_not_stored_when_the_bridge_stops_are_redelivered_to_the_next_one(
    start_bridge: Callable[..., Bridge], store: Store, device: Callable[..., Device]
) -> None:
    """Manual PUBACKs: the broker keeps what the bridge received but could not store."""
    flaky = FlakyStore(store)
    flaky.failing.set()
    first = start_bridge(store=flaky)
    watcher = device("watcher", ["chat/c1/msg"])
    alice = device("alice", ["user/alice/ack"])
    for i in range(3):
        send(alice, "c1", "alice", f"m{i}")
    flaky.wait_failures(2)
    first.stop()  # gives up on the unstored batch without acking it
    assert alice.on("user/alice/ack") == []

    start_bridge()  # healthy store; same client id, so the same broker session
    acks = alice.wait_count("user/alice/ack", 3)
    assert sorted((a["client_msg_id"], a["seq"]) for a in acks) == [("m0", 1), ("m1", 2), ("m2", 3)]
    assert [m["seq"] for m in watcher.wait_count("chat/c1/msg", 3)] == [1, 2, 3]
    assert len(store.history("c1").messages) == 3
