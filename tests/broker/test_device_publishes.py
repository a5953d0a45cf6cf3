"""What a logged-in device may make the broker relay or keep: events, never state.

Chat topics and device presence are never retained (RETAIN is stripped: the message is relayed,
not kept), so nothing stale reaches a new subscriber and a restarted bridge is not handed an old
send again. Typing indicators, which never reach the bridge, are checked by the broker: strict
``{"typing": bool}``, at most 64 bytes, and a per-user rate; anything else is dropped.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.inproc import InProcessBroker
from tests.broker.mqtt import Mqtt

pytestmark = pytest.mark.timeout(60)

TYPING = b'{"typing": true}'


def _service(running: InProcessBroker, **kwargs: Any) -> Mqtt:
    client = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token, **kwargs)
    assert client.connect() == 0
    return client


def _user(running: InProcessBroker, name: str, **kwargs: Any) -> Mqtt:
    client = Mqtt(running.port, name, PASSWORDS[name], **kwargs)
    assert client.connect() == 0
    return client


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("chat/c1/typing/alice", TYPING),
        ("chat/c1/send/alice", b'{"client_msg_id": "r1", "body": "kept?"}'),
        ("chat/c1/receipt/alice", b'{"seq": 1, "status": "read"}'),
        ("presence/alice/phone", b'{"status": "online", "conn": "c1"}'),
    ],
)
def test_a_retained_device_publish_is_relayed_but_never_kept(run_broker: Any, topic: str, payload: bytes) -> None:
    running = run_broker("ours")
    live = _service(running)
    alice = _user(running, "alice")
    try:
        assert live.subscribe("#") == 1
        alice.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        got = live.expect()
        assert (got.topic, got.payload, got.retain) == (topic, payload, False)
        later = _service(running)  # a new subscriber (a restarted bridge) gets nothing replayed
        try:
            assert later.subscribe("#") == 1
            assert later.drain(0.5) == []
        finally:
            later.stop()
    finally:
        alice.stop()
        live.stop()


def test_a_device_will_is_never_retained(run_broker: Any) -> None:
    running = run_broker("ours")
    watcher = _service(running)
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    alice.client.will_set("presence/alice/phone", b'{"status": "offline", "conn": "c1"}', qos=1, retain=True)
    try:
        assert watcher.subscribe("presence/+/+") == 1
        assert alice.connect() == 0
        alice.drop()  # no DISCONNECT: the will goes out
        assert watcher.expect(timeout=5).retain is False
        later = _service(running)
        try:
            assert later.subscribe("presence/+/+") == 1
            assert later.drain(0.5) == []
        finally:
            later.stop()
    finally:
        watcher.stop()


@pytest.mark.parametrize(
    "payload",
    [
        b"typing",  # not JSON
        b"[true]",  # not an object
        b'{"typing": "yes"}',  # not a bool
        b'{"typing": 1}',  # no coercion
        b'{"typing": true, "extra": 1}',  # unknown field
        b'{"client_msg_id": "m1", "body": "a message on the typing topic"}',
        b'{"typing": true}' + b" " * 60,  # over 64 bytes
        b"x" * 60_000,
    ],
)
def test_invalid_typing_payloads_are_not_relayed(run_broker: Any, payload: bytes) -> None:
    running = run_broker("ours")
    alice, bob = _user(running, "alice"), _user(running, "bob")
    try:
        assert bob.subscribe("chat/c1/typing/+", qos=0) == 0
        alice.client.publish("chat/c1/typing/alice", payload, qos=1).wait_for_publish(5)
        alice.client.publish("chat/c1/typing/alice", TYPING, qos=1).wait_for_publish(5)
        assert [m.payload for m in bob.wait_for(TYPING)] == [TYPING]  # the valid one only
    finally:
        alice.stop()
        bob.stop()


def test_typing_is_rate_limited_per_user(run_broker: Any) -> None:
    running = run_broker("ours", typing_per_s=2.0, typing_burst=10)
    alice, bob = _user(running, "alice"), _user(running, "bob")
    try:
        assert bob.subscribe("chat/c1/typing/+", qos=0) == 0
        started = time.monotonic()
        infos = [alice.client.publish("chat/c1/typing/alice", TYPING, qos=1) for _ in range(2000)]
        for info in infos:
            info.wait_for_publish(10)
        elapsed = time.monotonic() - started
        got = len(bob.drain(0.5))
        assert 10 <= got <= 10 + 2.0 * elapsed + 1
    finally:
        alice.stop()
        bob.stop()
