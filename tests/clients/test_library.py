"""The client library against the real stack: acks, the outbox across lost links and restarts,
catch-up in order and exactly once, and the presence will."""

from __future__ import annotations

import asyncio
import queue
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatmq.clients import AsyncChatClient, ChatClient
from chatmq.core.netutil import disable_nagle
from chatmq.core.protocol import TopicKind
from tests.clients.proxy import FlakyLink
from tests.stack import PASSWORD, Stack, tcp_nodelay

pytestmark = pytest.mark.timeout(120)


def _setup(stack: Stack, unique: Callable[[str], str]) -> tuple[str, str, str]:
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    return alice, bob, conv


def _client(stack: Stack, user: str, port: int | None = None, **kwargs: Any) -> ChatClient:
    kwargs.setdefault("device", "phone")
    kwargs.setdefault("reconnect_delay", (0.1, 0.5))
    return ChatClient("127.0.0.1", port or stack.mqtt_port, user, PASSWORD, api_url=stack.base_url, **kwargs)


def _messages(client: ChatClient, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        event = client.next_event(max(0.01, deadline - time.monotonic()))
        if event.kind is TopicKind.MSG:
            got.append(event.payload)
    return got


def _no_more_messages(client: ChatClient, wait: float = 1.0) -> None:
    with pytest.raises(queue.Empty):
        _messages(client, 1, timeout=wait)


def _stored(stack: Stack, user: str, conv: str) -> list[dict[str, Any]]:
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?limit=200", token=stack.token(user))
    assert status == 200, page
    return list(page["messages"])


def test_send_resolves_with_received_ack_and_rejects_bad_input(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with _client(stack, alice).connect() as a, _client(stack, bob).connect() as b:
        b.join(conv)
        acks: list[Any] = []
        a.on_ack(acks.append)
        ack = a.send(conv, "hello").result(10)
        assert (ack.status, ack.seq, ack.conv) == ("received", 1, conv)
        assert _messages(b, 1)[0]["body"] == "hello"
        rejected = a.send(conv, "x" * 5000).result(10)
        assert rejected.status == "rejected" and rejected.error and rejected.error["code"] == "too_large"
        assert [x.status for x in acks] == ["received", "rejected"]
        assert len(a.outbox) == 0  # a rejection is final: not retried
    assert [m["body"] for m in _stored(stack, alice, conv)] == ["hello"]


def test_a_send_over_the_packet_limit_is_refused_by_the_client_and_the_link_stays(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    """A 2 MB send would make the broker close the connection with no answer, and every resend
    would again: the library refuses it itself, at once, and later sends go through."""
    alice, bob, conv = _setup(stack, unique)
    with _client(stack, alice).connect() as a, _client(stack, bob).connect() as b:
        b.join(conv)
        drops: list[Any] = []
        a.on_connection(lambda up, *_: drops.append(up) if not up else None)
        acks: list[Any] = []
        a.on_ack(acks.append)
        refused = a.send(conv, "x" * 2_000_000)
        assert refused.done()
        ack = refused.result(0)
        assert (ack.status, ack.error and ack.error["code"]) == ("rejected", "too_large")
        assert "at most 65536" in ack.error["message"] and acks == [ack]
        assert len(a.outbox) == 0
        assert a.send(conv, "after").result(10).status == "received"
        assert [m["body"] for m in _messages(b, 1)] == ["after"]
        assert drops == []  # the connection never dropped
    assert [m["body"] for m in _stored(stack, alice, conv)] == ["after"]


def test_sends_in_flight_survive_a_cut_link_without_loss_or_duplicate(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    alice, bob, conv = _setup(stack, unique)
    link = FlakyLink(stack.mqtt_port)
    try:
        with _client(stack, bob).connect() as b, _client(stack, alice, port=link.port).connect() as a:
            b.join(conv)
            futures = [a.send(conv, f"m{i}") for i in range(60)]
            link.cut()  # mid-burst: some sends are on the wire, some acks never arrive
            futures += [a.send(conv, f"m{i}") for i in range(60, 80)]  # queued while reconnecting
            acks = [f.result(30) for f in futures]
            assert link.connections >= 2, "the client reconnected"
            assert all(ack.ok for ack in acks)
            assert sorted(ack.seq for ack in acks) == list(range(1, 81)), "one seq per send: no duplicate"
            seen = _messages(b, 80)
            assert [m["seq"] for m in seen] == list(range(1, 81))
            _no_more_messages(b)
    finally:
        link.close()
    stored = _stored(stack, alice, conv)
    assert sorted(m["body"] for m in stored) == sorted(f"m{i}" for i in range(80))


def test_on_connection_reports_each_outage_once_and_the_return_before_its_acks(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    alice, _bob, conv = _setup(stack, unique)
    link = FlakyLink(stack.mqtt_port)
    events: list[object] = []
    try:
        client = _client(stack, alice, port=link.port)
        client.on_connection(lambda up, _reason: events.append(up))
        client.on_ack(lambda ack: events.append(ack.seq))
        with client.connect():
            link.down()
            time.sleep(3)  # reconnect attempts 0.1-0.5 s apart fail meanwhile: none is reported
            pending = client.send(conv, "queued while down")
            link.up()
            seq = pending.result(30).seq
            assert events == [True, False, True, seq]
    finally:
        link.close()


def test_outbox_file_resumes_sends_after_a_stack_and_process_restart(
    tmp_path: Path, redis_server: Any
) -> None:
    """Sends made while the server is down are kept in the state file; a new process resends them
    once the stack is back (same data dir) and each is stored once."""
    data_dir, state = tmp_path / "data", tmp_path / "client.db"
    first = Stack(data_dir, redis_server.url).start()
    try:
        first.add_user("ann")
        first.add_user("ben")
        first.create_conv("resume", "ann", "ben")
        client = _client(first, "ann", state_file=state)
        client.connect()
        assert client.send("resume", "before").result(10).seq == 1
        first.stop()
        assert client.send("resume", "while down 1").done() is False
        client.send("resume", "while down 2", client_msg_id="fixed-id")
        client.close()  # the process ends with two unacked sends
    finally:
        first.stop()

    second = Stack(data_dir, redis_server.url).start()
    try:
        client = _client(second, "ann", state_file=state)
        assert len(client.resumed) == 2
        client.connect()
        acks = [f.result(15) for f in client.resumed]
        assert [a.seq for a in acks] == [2, 3]
        client.close()
        again = _client(second, "ann", state_file=state)  # nothing left to resend
        assert again.resumed == []
        again.connect().close()
        bodies = [m["body"] for m in _stored(second, "ben", "resume")]
        assert bodies == ["before", "while down 1", "while down 2"]
    finally:
        second.stop()


def test_offline_client_catches_up_in_order_exactly_once(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    link = FlakyLink(stack.mqtt_port)
    try:
        with _client(stack, alice).connect() as a, _client(stack, bob, port=link.port).connect() as b:
            b.join(conv)
            for i in range(3):
                a.send(conv, f"live {i}").result(10)
            assert [m["seq"] for m in _messages(b, 3)] == [1, 2, 3]
            link.down()  # bob is offline while alice keeps talking
            assert _wait(lambda: not b.connected)
            for i in range(250):  # more than one history page
                a.send(conv, f"missed {i}")
            assert a.drain(30)
            link.up()
            after = a.send(conv, "after").result(10)
            seen = _messages(b, 251, timeout=30)
            assert [m["seq"] for m in seen] == list(range(4, after.seq + 1))
            assert seen[0]["body"] == "missed 0" and seen[-1]["body"] == "after"
            _no_more_messages(b)
            assert b.joined() == {conv: after.seq}
    finally:
        link.close()


def test_cursor_in_state_file_resumes_where_the_last_process_stopped(
    stack: Stack, unique: Callable[[str], str], tmp_path: Path
) -> None:
    alice, bob, conv = _setup(stack, unique)
    state = tmp_path / "bob.db"
    with _client(stack, alice).connect() as a:
        with _client(stack, bob, state_file=state).connect() as b:
            b.join(conv)
            a.send(conv, "one").result(10)
            assert _messages(b, 1)[0]["body"] == "one"
        for body in ("two", "three"):
            a.send(conv, body).result(10)
        with _client(stack, bob, state_file=state).connect() as b:
            b.join(conv)  # no `after`: the saved cursor says 1
            assert [m["body"] for m in _messages(b, 2)] == ["two", "three"]
            _no_more_messages(b)


def test_join_after_fetches_history_then_continues_live(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)
    with _client(stack, alice).connect() as a, _client(stack, bob).connect() as b:
        for i in range(5):
            a.send(conv, f"old {i}").result(10)
        b.join(conv, after=2)
        a.send(conv, "new").result(10)
        assert [m["seq"] for m in _messages(b, 4)] == [3, 4, 5, 6]
        _no_more_messages(b, 0.5)


def test_presence_will_fires_on_abrupt_loss_and_reconnect_is_online_again(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    alice, bob, _conv = _setup(stack, unique)
    link = FlakyLink(stack.mqtt_port)
    statuses: queue.Queue[str] = queue.Queue()
    try:
        with _client(stack, bob).connect() as watcher:
            watcher.on_presence(lambda e: statuses.put(e.payload["status"]) if e.user == alice else None)
            a = _client(stack, alice, port=link.port, heartbeat_interval=1.0).connect()
            watcher.watch_presence(alice)
            _expect(statuses, "online")
            first_conn = a.conn
            link.down()  # abrupt: no DISCONNECT, the broker publishes the will
            _expect(statuses, "offline")
            link.up()
            _expect(statuses, "online")
            assert a.conn != first_conn, "each connection has its own conn id"
            a.close()
            _expect(statuses, "offline")
    finally:
        link.close()


def test_async_flavour_shares_the_core(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, conv = _setup(stack, unique)

    async def scenario() -> list[str]:
        async with AsyncChatClient("127.0.0.1", stack.mqtt_port, bob, PASSWORD, device="tab",
                                   api_url=stack.base_url) as b:
            await b.join(conv)
            async with AsyncChatClient("127.0.0.1", stack.mqtt_port, alice, PASSWORD, device="tab") as a:
                acks = [await a.send(conv, f"async {i}") for i in range(3)]
                assert [ack.seq for ack in acks] == [1, 2, 3]
            bodies = []
            while len(bodies) < 3:
                event = await b.next_event(10)
                if event.kind is TopicKind.MSG:
                    bodies.append(event.payload["body"])
            return bodies

    assert asyncio.run(scenario()) == ["async 0", "async 1", "async 2"]


def _expect(statuses: queue.Queue[str], wanted: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if statuses.get(timeout=left) == wanted:
            return
    raise AssertionError(f"no {wanted} presence within {timeout}s")


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_connecting_twice_keeps_one_connection(stack: Stack, unique: Callable[[str], str]) -> None:
    """`with client:` on a connected client must not open a second socket (paho would drop the
    first one, and with it whatever QoS 0 publish was on its way)."""
    alice, _bob, conv = _setup(stack, unique)
    client = _client(stack, alice).connect()
    connects: list[Any] = []
    client._mqtt.on_connect_fail = lambda *args: connects.append(args)
    on_connect = client._mqtt.on_connect
    client._mqtt.on_connect = lambda *args: (connects.append(args), on_connect(*args))
    with client:  # a second connect()
        client.join(conv)
        assert client.send(conv, "still the first connection").result(10).ok
        time.sleep(0.5)
        assert connects == [], "the client reconnected"


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_client_socket_has_nagle_off(stack: Stack, unique: Callable[[str], str], transport: str) -> None:
    """Chat packets are small: with Nagle on, a send could wait ~40 ms for the broker's delayed ACK."""
    alice, _bob, _conv = _setup(stack, unique)
    port = stack.ws_port if transport == "websockets" else stack.mqtt_port
    client = _client(stack, alice, port, transport=transport).connect()
    try:
        assert tcp_nodelay(client._mqtt.socket()) == 1
    finally:
        client.close()


def test_disable_nagle_leaves_non_tcp_sockets_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        disable_nagle(left)  # a Unix socket: no TCP options, no error
        disable_nagle(object())  # no fileno at all
        left.sendall(b"still works")
        assert right.recv(16) == b"still works"
