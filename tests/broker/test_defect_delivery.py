"""Regression tests for amqtt 0.12.1's delivery defects: each runs against stock amqtt (xfail
strict: the defect is real) and against ChatBroker."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import pytest

from chatmq.broker.hooks.access import AccessControl
from chatmq.core.access import Action
from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.inproc import BOTH, InProcessBroker
from tests.broker.mqtt import Mqtt

pytestmark = pytest.mark.timeout(60)


def _service(running: InProcessBroker, **kwargs: Any) -> Mqtt:
    client = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token, **kwargs)
    assert client.connect() == 0
    return client


@pytest.mark.parametrize("kind", BOTH)
def test_acknowledged_qos1_publishes_survive_the_publisher_disconnecting(
    run_broker: Any, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slightly slow PUBLISH access check (1 ms, as when a check must confirm with the store) lets
    # the reader PUBACK ahead of the message loop, so the race is certain rather than load-dependent.
    check = AccessControl.check

    async def slow_check(self: AccessControl, session: Any, action: Action, topic: str) -> bool:
        if action is Action.PUBLISH:
            await asyncio.sleep(0.001)
        return await check(self, session, action, topic)

    monkeypatch.setattr(AccessControl, "check", slow_check)
    running = run_broker(kind)
    service = _service(running)
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    try:
        assert service.subscribe("chat/+/send/+") == 1
        assert alice.connect() == 0
        infos = [alice.client.publish("chat/c1/send/alice", b"m%d" % i, qos=1) for i in range(200)]
        for info in infos:
            info.wait_for_publish(10)
        alice.stop()  # DISCONNECT right after the last PUBACK
        got = {m.payload for m in _collect(service, 200, timeout=5)}
        assert got == {b"m%d" % i for i in range(200)}
    finally:
        service.stop()


def _collect(client: Mqtt, count: int, timeout: float) -> list[Any]:
    out = []
    try:
        while len(out) < count:
            out.append(client.expect(timeout=timeout))
    except queue.Empty:
        pass
    return out


@pytest.mark.parametrize("kind", BOTH)
def test_persistent_session_gets_unacked_and_offline_messages_with_the_right_flags(
    run_broker: Any, kind: str
) -> None:
    running = run_broker(kind)
    service = _service(running)
    bob = Mqtt(running.port, "bob", PASSWORDS["bob"], client_id="bob-phone", clean_session=False, manual_ack=True)
    try:
        assert bob.connect() == 0
        assert bob.subscribe("chat/c1/msg", qos=1) == 1
        service.publish("chat/c1/msg", b"live qos0", qos=0)
        live = bob.expect()
        assert (live.payload, live.qos) == (b"live qos0", 0)  # min(publish 0, granted 1)
        service.publish("chat/c1/msg", b"unacked", qos=1)
        assert bob.expect().payload == b"unacked"  # received, never PUBACKed
        bob.drop()
        service.publish("chat/c1/msg", b"offline qos1", qos=1)
        service.publish("chat/c1/msg", b"offline qos0", qos=0)
        bob = Mqtt(running.port, "bob", PASSWORDS["bob"], client_id="bob-phone", clean_session=False)
        assert bob.connect() == 0
        assert bob.session_present is True
        got = {m.payload: m for m in bob.wait_for(b"offline qos1", timeout=5) + bob.drain(0.3)}
        assert got[b"unacked"].dup and got[b"unacked"].qos == 1
        assert got[b"offline qos1"].retain is False and got[b"offline qos1"].qos == 1
        assert b"offline qos0" not in got or got[b"offline qos0"].qos == 0
    finally:
        bob.stop()
        service.stop()


@pytest.mark.parametrize("kind", BOTH)
def test_retained_messages_go_only_to_allowed_new_subscriptions(run_broker: Any, kind: str) -> None:
    running = run_broker(kind, allow_anonymous=True)
    service = _service(running)
    carol = Mqtt(running.port, "carol", PASSWORDS["carol"])
    alice = Mqtt(running.port, "alice", PASSWORDS["alice"])
    anonymous = Mqtt(running.port, None, None)
    try:
        service.client.publish("chat/c2/msg", b"c2 secret", qos=1, retain=True).wait_for_publish(5)
        service.client.publish("public/news", b"hello", qos=1, retain=True).wait_for_publish(5)
        assert carol.connect() == 0
        assert carol.subscribe("chat/c2/msg") == 1
        assert carol.expect().payload == b"c2 secret"
        # alice is no member of c2: connecting must not hand her c2's retained message
        assert alice.connect() == 0
        assert alice.drain(0.5) == []
        # an anonymous '#' subscription gets the public retained message only
        assert anonymous.connect() == 0
        assert anonymous.subscribe("#") == 1
        got = {m.payload for m in anonymous.drain(0.5)}
        assert got == {b"hello"}
    finally:
        for client in (anonymous, alice, carol, service):
            client.stop()
