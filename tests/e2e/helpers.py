"""Small MQTT helpers for the receipts and conversation e2e tests (bare paho via RawClient)."""

from __future__ import annotations

import itertools
import json
import queue
import time
from typing import Any

from tests.stack import RawClient, Stack

_ids = itertools.count()


def raw(stack: Stack, user: str, *topics: str) -> RawClient:
    """A connected bare client with its own client id, subscribed to ``topics``."""
    client = RawClient(stack.mqtt_port, user, client_id=f"e2e-{user}-{next(_ids)}")
    assert not client.refused, client.reason
    for topic in topics:
        assert client.subscribe(topic), f"{user} could not subscribe to {topic}"
    return client


def send(sender: RawClient, user: str, conv: str, body: str, cmid: str) -> dict[str, Any]:
    """Send and wait for the ack (``sender`` must be subscribed to its ack topic only)."""
    sender.publish(f"chat/{conv}/send/{user}", json.dumps({"client_msg_id": cmid, "body": body}).encode())
    ack = json.loads(sender.expect(f"user/{user}/ack"))
    assert ack["status"] == "received", ack
    return ack


def next_json(client: RawClient, topic: str, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(client.expect(topic, timeout))


def next_event(client: RawClient, user: str, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next ``user/{user}/events`` payload of one kind, skipping others (membership events
    for the conversations a test just set up may still be on their way)."""
    deadline = time.monotonic() + timeout
    while True:
        event = next_json(client, f"user/{user}/events", max(0.1, deadline - time.monotonic()))
        if event.get("event") == kind:
            return event


def nothing_on(client: RawClient, topic: str, wait: float) -> bool:
    try:
        client.expect(topic, wait)
    except queue.Empty:
        return True
    return False


def poll(check: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
