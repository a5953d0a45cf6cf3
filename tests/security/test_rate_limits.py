"""Rate limits through the real stack: failed logins (MQTT and HTTP, one shared budget) and the
per-sender message rate, whose refusals the client library treats as "later", not "never"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmq.cli.localredis import LocalRedis
from chatmq.clients import ChatClient
from tests.stack import PASSWORD, RawClient, Stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Stack]:
    env = {"CHATMQ_LOGIN_FAILURES_PER_USER": "3", "CHATMQ_LOGIN_WINDOW_S": "3600",  # no window edge mid-test
           "CHATMQ_MESSAGES_PER_S": "2", "CHATMQ_MESSAGES_BURST": "5"}
    running = Stack(Path(tmp_path_factory.mktemp("limited")) / "data", redis_server.url, env=env).start()
    yield running
    assert running.stop() == 0, running.log()


def test_failed_logins_lock_the_user_out_of_mqtt_and_http(limited: Stack) -> None:
    limited.add_user("rl-target")
    limited.add_user("rl-bystander")
    for _ in range(2):
        assert RawClient(limited.mqtt_port, "rl-target", "wrong").refused
    status, body = limited.http("POST", "/v1/auth/token", body={"username": "rl-target", "password": "wrong"})
    assert (status, body["error"]["code"]) == (401, "invalid_credentials")
    # three failures (MQTT and HTTP count together): now even the right password is refused
    assert RawClient(limited.mqtt_port, "rl-target", PASSWORD).refused
    status, body = limited.http("POST", "/v1/auth/token", body={"username": "rl-target", "password": PASSWORD})
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    # other users are not affected
    bystander = RawClient(limited.mqtt_port, "rl-bystander", PASSWORD)
    assert not bystander.refused
    bystander.close()
    assert limited.http("POST", "/v1/auth/token", body={"username": "rl-bystander", "password": PASSWORD})[0] == 200


def test_sends_over_the_rate_are_refused_as_transient_and_nothing_is_stored(limited: Stack) -> None:
    limited.add_user("rl-fast")
    limited.create_conv("rl-conv", "rl-fast")
    raw = RawClient(limited.mqtt_port, "rl-fast")
    try:
        assert raw.subscribe("user/rl-fast/ack")
        for i in range(8):
            raw.publish("chat/rl-conv/send/rl-fast", json.dumps({"client_msg_id": f"f{i}", "body": "x"}).encode())
        acks = [json.loads(raw.expect("user/rl-fast/ack")) for _ in range(8)]
    finally:
        raw.close()
    limited_ids = {a["client_msg_id"] for a in acks if a["status"] == "rejected"}
    assert {a["error"]["code"] for a in acks if a["status"] == "rejected"} == {"rate_limited"}
    assert 2 <= len(limited_ids) <= 3  # a burst of 5 (plus what the rate refilled meanwhile)
    status, page = limited.http("GET", "/v1/conversations/rl-conv/messages", token=limited.token("rl-fast"))
    assert status == 200
    assert {m["client_msg_id"] for m in page["messages"]}.isdisjoint(limited_ids)


def test_client_library_resends_rate_limited_sends_until_stored(limited: Stack) -> None:
    limited.add_user("rl-lib")
    limited.create_conv("rl-lib-conv", "rl-lib")
    with ChatClient("127.0.0.1", limited.mqtt_port, "rl-lib", PASSWORD, resend_after=0.5) as client:
        futures = [client.send("rl-lib-conv", f"m{i}") for i in range(10)]
        acks = [future.result(30) for future in futures]
    assert all(ack.status == "received" for ack in acks)
    assert sorted(ack.seq for ack in acks) == list(range(1, 11))  # each stored once, no gap


def test_connections_per_address_are_limited_when_configured(tmp_path: Path, redis_server: LocalRedis) -> None:
    # a limit of 30 CONNECTs a minute from one address (the stack's own bridge and probes count too)
    stack = Stack(tmp_path / "data", redis_server.url, env={"CHATMQ_CONNECTIONS_PER_ADDRESS": "30",
                                                         "CHATMQ_LOGIN_WINDOW_S": "3600"}).start()  # no window edge
    try:
        stack.add_user("rl-conn")
        outcomes = []
        for _ in range(40):
            client = RawClient(stack.mqtt_port, "rl-conn")
            outcomes.append(client.refused)
            if not client.refused:
                client.close()
        assert not outcomes[0] and outcomes[-1], "the first connections pass, the ones over the limit do not"
        assert outcomes == sorted(outcomes), "once over the limit, refused for the rest of the window"
    finally:
        assert stack.stop() == 0, stack.log()
