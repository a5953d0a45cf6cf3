"""Access rules enforced by the real broker, and membership changes taking effect live."""

from __future__ import annotations

import json
import queue
import time

import pytest

from tests.stack import RawClient, Stack


def test_login_needs_valid_credentials(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice = trio[0]
    assert RawClient(stack.mqtt_port, alice, "wrong password").refused
    assert RawClient(stack.mqtt_port, "nobody-here", "x").refused
    token_client = RawClient(stack.mqtt_port, alice, stack.token(alice))
    assert not token_client.refused
    token_client.close()


def test_spoofed_sender_and_non_member_sends_are_dropped(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice, bob, carol, conv = trio
    listener = RawClient(stack.mqtt_port, bob)
    mallory = RawClient(stack.mqtt_port, carol)
    try:
        assert listener.subscribe(f"chat/{conv}/msg")
        # alice impersonated by carol, and carol writing into a conversation she is not in
        mallory.publish(f"chat/{conv}/send/{alice}", b'{"client_msg_id": "s1", "body": "spoof"}')
        mallory.publish(f"chat/{conv}/send/{carol}", b'{"client_msg_id": "s2", "body": "intrude"}')
        # a server-only topic written by a device
        mallory.publish(f"chat/{conv}/msg", b'{"seq": 99, "body": "forged"}')
        with pytest.raises(queue.Empty):
            listener.expect(f"chat/{conv}/msg", timeout=1.5)
    finally:
        listener.close()
        mallory.close()
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(alice))
    assert status == 200 and page["messages"] == []


def test_subscriptions_are_limited_to_own_identity_and_conversations(
    stack: Stack, trio: tuple[str, str, str, str]
) -> None:
    alice, bob, carol, conv = trio
    client = RawClient(stack.mqtt_port, alice)
    try:
        assert client.subscribe(f"chat/{conv}/msg")
        assert client.subscribe(f"chat/{conv}/typing/+")
        assert client.subscribe(f"user/{alice}/ack")
        assert client.subscribe(f"presence/{bob}")  # shares a conversation
        for forbidden in (f"user/{bob}/ack", "chat/+/msg", "#", "chat/#", f"chat/{conv}/send/+",
                          f"presence/{carol}", "presence/+", f"presence/{bob}/+", "$SYS/#"):
            assert not client.subscribe(forbidden), forbidden
    finally:
        client.close()


def test_last_will_must_be_own_device_presence(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice, bob, _carol, conv = trio
    for topic in (f"chat/{conv}/msg", f"presence/{bob}/phone", f"presence/{alice}", f"user/{bob}/ack"):
        abuser = RawClient(stack.mqtt_port, alice, will=(topic, b'{"status": "offline", "conn": "x"}'))
        assert abuser.refused, topic
    fine = RawClient(stack.mqtt_port, alice, will=(f"presence/{alice}/phone", b'{"status":"offline","conn":"x"}'))
    assert not fine.refused
    fine.close()


def test_membership_change_takes_effect_without_restart(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice, _bob, carol, conv = trio
    with stack.client(alice) as a:
        carol_client = RawClient(stack.mqtt_port, carol)
        try:
            assert not carol_client.subscribe(f"chat/{conv}/msg")
            stack.admin("conv", "add-member", conv, carol)
            started = time.monotonic()
            while not carol_client.subscribe(f"chat/{conv}/msg"):
                assert time.monotonic() - started < 1.5, "membership change not seen within ~1 s"
                time.sleep(0.1)
            a.send(conv, "welcome carol").result(10)
            assert json.loads(carol_client.expect(f"chat/{conv}/msg"))["body"] == "welcome carol"

            stack.admin("conv", "remove-member", conv, carol)
            time.sleep(1.2)
            a.send(conv, "carol is gone").result(10)
            with pytest.raises(queue.Empty):  # the already-open subscription is cut too
                carol_client.expect(f"chat/{conv}/msg", timeout=1.5)
        finally:
            carol_client.close()
    status, _ = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(carol))
    assert status == 403
