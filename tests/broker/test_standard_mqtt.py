"""With allow_anonymous the broker is a plain MQTT 3.1.1 broker outside the chat namespaces.

Checked with an independent client, Mosquitto's mosquitto_pub/mosquitto_sub (scripts/ensure-deps
installs them), besides paho; chat topics keep the chatmq rules.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.broker.conftest import PASSWORDS
from tests.broker.inproc import InProcessBroker
from tests.broker.mqtt import SUBACK_FAILURE, Mqtt
from tests.broker.raw import RawClient, connect

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients not installed"),
]


def pub(running: InProcessBroker, topic: str, message: str | None, *args: str) -> None:
    payload = ["-n"] if message is None else ["-m", message]
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(running.port), "-t", topic, *payload, *args],
        check=True,
        timeout=10,
    )


def sub(running: InProcessBroker, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(running.port), "-v", *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def lines(proc: subprocess.Popen[str]) -> list[str]:
    out, _ = proc.communicate(timeout=15)
    return out.splitlines()


def subscribed(running: InProcessBroker, count: int) -> None:
    """Wait until ``count`` subscriptions exist (mosquitto_sub gives no ready signal)."""
    deadline = time.monotonic() + 10
    while sum(len(subs) for subs in running.broker.subscriptions.values()) < count:
        assert time.monotonic() < deadline, "subscription not seen"
        time.sleep(0.02)


@pytest.fixture
def running(run_broker: Any) -> InProcessBroker:
    return run_broker("ours", allow_anonymous=True)


def test_qos_levels_and_dollar_topics(running: InProcessBroker) -> None:
    everything = sub(running, "-t", "#", "-q", "2", "-C", "3", "-W", "10")
    system = sub(running, "-t", "$SYS/#", "-C", "1", "-W", "10")
    subscribed(running, 2)
    running.call(running.broker.internal_message_broadcast("$SYS/broker/test", b"sys"))
    for qos in ("0", "1", "2"):
        pub(running, f"plain/q{qos}", f"m{qos}", "-q", qos)
    assert lines(everything) == ["plain/q0 m0", "plain/q1 m1", "plain/q2 m2"]  # no $SYS via '#'
    assert lines(system) == ["$SYS/broker/test sys"]


def test_retained_messages_and_their_deletion(running: InProcessBroker) -> None:
    pub(running, "news/today", "sunny", "-r", "-q", "1")
    assert lines(sub(running, "-t", "news/+", "-C", "1", "-W", "5")) == ["news/today sunny"]
    pub(running, "news/today", None, "-r", "-q", "1")  # a zero-length retained message deletes it
    assert lines(sub(running, "-t", "news/+", "-W", "1")) == []


def test_offline_queue_for_a_persistent_anonymous_session(running: InProcessBroker) -> None:
    first = sub(running, "-t", "inbox/x", "-q", "1", "-c", "-i", "reader-1", "-W", "1")
    subscribed(running, 1)
    assert lines(first) == []
    deadline = time.monotonic() + 5
    while running.broker.sessions["reader-1"][0].transitions.is_connected():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pub(running, "inbox/x", "while away", "-q", "1")
    assert lines(sub(running, "-t", "inbox/x", "-q", "1", "-c", "-i", "reader-1", "-C", "1", "-W", "5")) == [
        "inbox/x while away"
    ]


def test_unsubscribe_overlap_and_zero_length_client_id(running: InProcessBroker) -> None:
    client = Mqtt(running.port, None, None, client_id="")
    assert client.connect() == 0
    try:
        assert client.subscribe("a/#", qos=0) == 0
        assert client.subscribe("a/+", qos=1) == 1
        pub(running, "a/b", "both", "-q", "1")
        got = client.wait_for(b"both") + client.drain(0.3)
        assert got and max(m.qos for m in got) == 1  # MQTT-3.3.5-1: the highest QoS of the matches
        client.client.unsubscribe("a/#")
        client.client.unsubscribe("a/+")
        time.sleep(0.2)
        pub(running, "a/b", "gone", "-q", "1")
        assert client.drain(0.5) == []
    finally:
        client.stop()


def test_anonymous_will_on_keepalive_expiry(running: InProcessBroker) -> None:
    watcher = sub(running, "-t", "status/#", "-C", "1", "-W", "10")
    subscribed(running, 1)
    silent = RawClient(running.port)
    silent.send(connect("dev-7", keepalive=1, will=("status/dev-7", b"gone")))
    assert silent.read(4) == b"\x20\x02\x00\x00"
    assert lines(watcher) == ["status/dev-7 gone"]
    silent.close()


def test_chat_namespaces_keep_the_chatmq_rules(running: InProcessBroker) -> None:
    anonymous = Mqtt(running.port, None, None)
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    assert anonymous.connect() == 0 and alice.connect() == 0
    try:
        assert anonymous.subscribe("chat/c1/msg") == SUBACK_FAILURE
        assert anonymous.subscribe("#") == 1
        alice.publish("chat/c1/send/alice", b"secret")
        alice.publish("plain/topic", b"open")  # authenticated clients get plain MQTT too
        assert [m.payload for m in anonymous.wait_for(b"open")] == [b"open"]
    finally:
        anonymous.stop()
        alice.stop()
