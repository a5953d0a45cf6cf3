"""/metrics, /healthz and /readyz of the API, the broker and the bridge of a real `chatmq up`."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.helpers import Device, get, get_json, metrics_url
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(url + "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_endpoints_of_every_service(stack: Stack) -> None:
    for component in ("broker", "bridge"):
        base = metrics_url(stack, component)
        assert get_json(base + "/healthz") == (200, {"status": "ok"})
        status, body = get_json(base + "/readyz")
        assert status == 200 and body["status"] == "ok", body
        assert set(body["checks"]) >= {"store", "redis"} and all(v == "ok" for v in body["checks"].values())
    assert stack.http("GET", "/healthz") == (200, {"status": "ok"})
    assert stack.http("GET", "/readyz")[0] == 200


def test_broker_and_bridge_series_move_when_messages_flow(stack: Stack, unique: Callable[[str], str]) -> None:
    user, outsider, conv = unique("met"), unique("out"), unique("mconv")
    stack.add_user(user)
    stack.add_user(outsider)
    stack.create_conv(conv, user)
    broker_url, bridge_url = metrics_url(stack, "broker"), metrics_url(stack, "bridge")
    broker_before, bridge_before = scrape(broker_url), scrape(bridge_url)
    for name in ("chatmq_broker_connected_clients", "chatmq_broker_queued_messages",
                 "chatmq_bridge_queue_depth", "chatmq_bridge_connected"):
        assert any(key[0] == name for key in {**broker_before, **bridge_before}), name

    device = Device(stack, user)
    intruder = Device(stack, outsider)
    try:
        assert device.subscribe(f"user/{user}/ack") and device.subscribe(f"chat/{conv}/msg")
        for i in range(3):
            device.send(conv, user, f"k{i}", "counted")
            device.expect(f"chat/{conv}/msg")  # fanned out before the ack is sent
            device.expect(f"user/{user}/ack")
        intruder.send(conv, outsider, "x", "not a member")  # refused by access control
        intruder.publish("$SYS/broker/load", b"{}")  # a reserved topic
        device.publish(f"presence/{user}/phone", orjson.dumps({"status": "online", "conn": "c1"}))
        broker_after = scrape(broker_url)
        bridge_after = scrape(bridge_url)
    finally:
        device.close()
        intruder.close()

    def moved(before: dict, after: dict, name: str, by: float, **labels: str) -> None:
        delta = value(after, name, **labels) - value(before, name, **labels)
        assert delta >= by, f"{name}{labels} moved by {delta}, expected >= {by}"

    moved(broker_before, broker_after, "chatmq_broker_messages_received_total", 5)
    moved(broker_before, broker_after, "chatmq_broker_messages_delivered_total", 6)  # 3 sends + 3 msgs + acks
    moved(broker_before, broker_after, "chatmq_broker_connections_total", 2)
    moved(broker_before, broker_after, "chatmq_broker_messages_rejected_total", 1, reason="publish_denied")
    moved(broker_before, broker_after, "chatmq_broker_messages_rejected_total", 1, reason="reserved_topic")
    assert value(broker_after, "chatmq_broker_connected_clients") >= 3  # bridge, device, intruder

    moved(bridge_before, bridge_after, "chatmq_bridge_ack_latency_seconds_count", 3)
    moved(bridge_before, bridge_after, "chatmq_bridge_store_write_seconds_count", 1)
    moved(bridge_before, bridge_after, "chatmq_bridge_sends_total", 3)
    assert value(bridge_after, "chatmq_bridge_connected") == 1


def test_presence_updates_are_counted(stack: Stack, unique: Callable[[str], str]) -> None:
    import time

    user = unique("pres")
    stack.add_user(user)
    bridge_url = metrics_url(stack, "bridge")
    before = value(scrape(bridge_url), "chatmq_bridge_presence_updates_total", status="online")
    device = Device(stack, user)
    try:
        device.publish(f"presence/{user}/phone", orjson.dumps({"status": "online", "conn": "c1"}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if value(scrape(bridge_url), "chatmq_bridge_presence_updates_total", status="online") > before:
                return
            time.sleep(0.1)
        raise AssertionError("presence update not counted")
    finally:
        device.close()


def test_api_metrics_sum_every_worker(stack: Stack) -> None:
    """The API runs 2 workers: /metrics must count the requests of both, by route and status."""
    base = stack.base_url

    def count(route: str, status: str) -> float:
        return value(scrape(base), "chatmq_api_request_duration_seconds_count", route=route, method="GET",
                     status=status)

    before_ok, before_401 = count("/healthz", "200"), count("/v1/conversations", "401")
    for _ in range(20):  # spread over the workers by the kernel's accept queue
        assert stack.http("GET", "/healthz")[0] == 200
        assert stack.http("GET", "/v1/conversations")[0] == 401
    assert count("/healthz", "200") - before_ok == 20
    assert count("/v1/conversations", "401") - before_401 == 20
    assert count("/v1/conversations/{conv}/messages", "200") == 0  # route patterns, not raw paths


def test_api_requests_carry_a_request_id_into_the_log(stack: Stack) -> None:
    import urllib.request

    request = urllib.request.Request(stack.base_url + "/healthz", headers={"X-Request-Id": "probe-42"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["X-Request-Id"] == "probe-42"
    with urllib.request.urlopen(stack.base_url + "/healthz", timeout=5) as response:
        assert len(response.headers["X-Request-Id"]) == 16  # a fresh one when none was given
    import time

    deadline = time.monotonic() + 5
    while "request_id=probe-42 method=GET route=/healthz status=200" not in stack.log():
        assert time.monotonic() < deadline, stack.log()[-2000:]
        time.sleep(0.1)
