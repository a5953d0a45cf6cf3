"""Routing (chatmq/broker/routing.py) in the production broker, served in a thread of this process with
hooks of the test's own (every login accepted, RECEIVE refused to some clients), and real paho
clients."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import pytest
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import Session

from chatmq.broker.amqtt_seam import AmqttBroker
from chatmq.broker.chatbroker import ChatBroker, build_broker
from chatmq.broker.hooks import HOOKS_VERSION, BrokerView, Control
from chatmq.broker.routing import SubscriptionsView
from chatmq.core.access import Action
from chatmq.core.mqtt.codec import encode_publish
from chatmq.core.netutil import free_port
from tests.broker.mqtt import Mqtt

pytestmark = pytest.mark.timeout(60)


class GateHooks:
    """Every CONNECT is accepted and is NOT anonymous, so persistent sessions queue offline. RECEIVE
    is denied to client ids starting with "deny"; a RECEIVE of topic "mutate/now" subscribes another
    client mid-broadcast (the "dictionary changed size" crash on stock)."""

    version = HOOKS_VERSION
    broker: AmqttBroker

    async def start(self, broker: BrokerView) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def authenticate(self, session: Session) -> bool:
        return True

    async def acl_check(self, session: Session, access: Action, topic: str) -> bool:
        if access is Action.RECEIVE:
            if topic == "mutate/now":
                _handler, late = self.broker.create_offline_session(f"late-joiner-{time.monotonic_ns()}")
                await self.broker.add_subscription((f"mutate/{time.monotonic_ns()}", 1), late)
                await asyncio.sleep(0)
            return not (session.client_id or "").startswith("deny")
        return True

    async def control(self, session: Session, topic: str, payload: bytes) -> Control:
        return Control.NOT_MINE

    async def disconnected(self, session: Session) -> None:
        pass


def _core(broker: AmqttBroker) -> ChatBroker:
    assert isinstance(broker.core, ChatBroker)
    return broker.core


def _config(port: int) -> dict[str, Any]:
    return {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}, "plugins": {}}


@dataclass
class Running:
    broker: AmqttBroker
    loop: asyncio.AbstractEventLoop
    port: int

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the broker's loop and return its result."""
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as error:
                done.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return done.result(5)


def _serve() -> Iterator[Running]:
    port = free_port()
    ready: Future[Running] = Future()
    stop = threading.Event()

    async def main() -> None:
        hooks = GateHooks()
        broker = hooks.broker = build_broker(_config(port), hooks=hooks)
        await broker.start()
        ready.set_result(Running(broker, asyncio.get_running_loop(), port))
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await broker.shutdown()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    running = ready.result(10)
    yield running
    stop.set()
    thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[Running]:
    yield from _serve()


class Client(Mqtt):
    """The test wrapper, also recording each message's QoS and retain flag."""

    def __init__(self, port: int, client_id: str, clean: bool = True) -> None:
        super().__init__(port, "u", "p", client_id=client_id)
        if not clean:
            self.client = paho.Client(
                paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=False
            )
            self.client.username_pw_set("u", "p")
            self.client.on_connect = self._on_connect
            self.client.on_subscribe = self._on_subscribe
        self.flags: queue.Queue[tuple[bytes, int, bool]] = queue.Queue()
        self.client.on_message = self._record

    def _record(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.flags.put((msg.payload, msg.qos, bool(msg.retain)))
        self._on_message(client, userdata, msg)


@pytest.fixture
def connect(served: Running) -> Iterator[Any]:
    made: list[Client] = []

    def make(client_id: str, clean: bool = True) -> Client:
        client = Client(served.port, f"{client_id}-{time.monotonic_ns()}", clean)
        assert client.connect() == 0
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


def test_wildcards_and_dollar_topics(served: Running, connect: Any) -> None:
    sub, pub = connect("sub"), connect("pub")
    for topic_filter in ("w/+/x", "w/#", "#"):
        assert sub.subscribe(topic_filter, 0) == 0
    pub.publish("w/a/x", b"one")
    # Clients may not publish '$' topics; the broker itself may, and '#' must not match them.
    served.call(lambda: asyncio.ensure_future(served.broker.internal_message_broadcast("$d/a", b"$", 0)))
    pub.publish("w", b"parent")  # w/# includes the parent level
    got = sub.wait_for(b"parent")
    assert [m.payload for m in got] == [b"one", b"parent"]  # once each, not once per filter


def test_overlapping_subscriptions_deliver_once_at_max_qos(connect: Any) -> None:
    sub, pub = connect("overlap"), connect("pub")
    assert sub.subscribe("o/+", 0) == 0
    assert sub.subscribe("o/#", 1) == 1
    assert sub.subscribe("o/t", 0) == 0
    pub.publish("o/t", b"m", qos=1)
    assert sub.flags.get(timeout=3) == (b"m", 1, False)
    assert sub.drain() == [] or sub.flags.empty()
    assert sub.flags.empty()


def test_receive_check_runs_per_recipient(connect: Any) -> None:
    allowed, denied, pub = connect("ok"), connect("deny"), connect("pub")
    for client in (allowed, denied):
        assert client.subscribe("r/t", 1) == 1
    pub.publish("r/t", b"x")
    pub.publish("r/t", b"end")
    assert [m.payload for m in allowed.wait_for(b"end")] == [b"x", b"end"]
    assert denied.drain(0.3) == []


def test_order_per_subscriber_is_publish_order(connect: Any) -> None:
    sub, pub = connect("order"), connect("pub")
    assert sub.subscribe("ord/t", 1) == 1
    # One QoS per run: paho itself holds QoS 1 publishes back beyond its in-flight window while
    # QoS 0 ones go straight out, so a mixed run is reordered before it reaches the broker.
    for qos in (0, 1):
        for n in range(300):
            pub.client.publish("ord/t", f"{qos}:{n}".encode(), qos=qos)
        pub.publish("ord/t", f"end{qos}".encode(), qos=qos)
        got = [m.payload for m in sub.wait_for(f"end{qos}".encode(), timeout=10)]
        assert got == [f"{qos}:{n}".encode() for n in range(300)] + [f"end{qos}".encode()]


def test_subscribing_during_a_broadcast_does_not_crash_routing(connect: Any) -> None:
    subs = [connect(f"mut{i}") for i in range(3)]
    pub = connect("pub")
    for sub in subs:
        assert sub.subscribe("mutate/#", 0) == 0
    pub.publish("mutate/now", b"a")  # each RECEIVE check adds a filter while routing is suspended
    pub.publish("mutate/now", b"b")
    for sub in subs:
        assert [m.payload for m in sub.wait_for(b"b")] == [b"a", b"b"]


def test_unsubscribe_and_subscriptions_view(served: Running, connect: Any) -> None:
    sub, pub = connect("view"), connect("pub")
    client_id = sub.client._client_id.decode()
    assert sub.subscribe("v/1", 1) == 1
    assert sub.subscribe("v/+", 0) == 0
    view = served.call(lambda: served.broker.plugins_manager.context.subscriptions)
    assert isinstance(view, SubscriptionsView)
    assert served.call(lambda: [s.client_id for s, q in view["v/1"]]) == [client_id]
    assert served.call(lambda: {"v/1", "v/+"} <= set(view))
    sub.client.unsubscribe("v/1")
    sub.client.unsubscribe("v/+")
    deadline = time.monotonic() + 3
    while served.call(lambda: _core(served.broker).router.index.filters_of(client_id)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pub.publish("v/1", b"gone")
    assert sub.drain(0.3) == []
    sub.stop()
    deadline = time.monotonic() + 5  # a clean session's subscriptions leave with it
    while served.call(lambda: client_id in {s.client_id for f in list(view) for s, _ in view.get(f, [])}):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_retained_for_new_subscription_only_after_receive_check(connect: Any) -> None:
    pub = connect("pub")
    pub.client.publish("ret/a", b"kept", qos=1, retain=True).wait_for_publish(3)
    pub.client.publish("ret/b/c", b"deep", qos=1, retain=True).wait_for_publish(3)
    sub, denied = connect("retsub"), connect("deny-ret")
    # (stock amqtt also pushes, on connect, retained messages for filters of OTHER clients at
    # QoS 0: defect 4, fixed in the broker core, so only what the subscriptions bring is checked)
    assert sub.subscribe("ret/+", 1) == 1
    assert (b"kept", 1, True) in _flags(sub)
    assert sub.subscribe("ret/b/c", 0) == 0
    assert (b"deep", 0, True) in _flags(sub)
    assert denied.subscribe("ret/#", 1) == 1
    assert denied.drain(0.3) == []


def _flags(client: Client, settle: float = 0.3) -> list[tuple[bytes, int, bool]]:
    time.sleep(settle)
    out = []
    while not client.flags.empty():
        out.append(client.flags.get_nowait())
    return out


def test_offline_persistent_session_gets_queued_messages(served: Running) -> None:
    client_id = f"persist-{time.monotonic_ns()}"
    sub = Client(served.port, client_id, clean=False)
    assert sub.connect() == 0
    assert sub.subscribe("off/t", 1) == 1
    sub.stop()
    pub = Client(served.port, f"pub-{time.monotonic_ns()}")
    assert pub.connect() == 0
    try:
        deadline = time.monotonic() + 3
        while served.call(lambda: served.broker.sessions[client_id][0].transitions.state) == "connected":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pub.publish("off/t", b"while-away", qos=1)
        again = Client(served.port, client_id, clean=False)
        assert again.connect() == 0
        try:
            assert again.expect().payload == b"while-away"
        finally:
            again.stop()
    finally:
        pub.stop()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 70_000])
@pytest.mark.parametrize(("qos", "packet_id", "retain"), [(0, None, False), (1, 7, False), (1, 65535, True)])
def test_publish_encoding_matches_amqtt(size: int, qos: int, packet_id: int | None, retain: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = PublishPacket.build("chat/c1/msg/é", payload, packet_id, False, qos, retain).to_bytes()
    assert encode_publish("chat/c1/msg/é", payload, qos, packet_id, retain) == bytes(expected)
