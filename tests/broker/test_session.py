"""chatmq/broker/session.py: the lean session state machine and queues behave like amqtt's originals, a
CONNECT makes the session amqtt's own CONNECT handling made, nothing of amqtt is patched, and the
session store survives the burst of writes of a reconnect storm (memory figures: bench/connections.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqtt
import pytest
from amqtt.adapters import BufferReader, WriterAdapter
from amqtt.mqtt.protocol import broker_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import MachineError

from chatmq.broker.amqtt_seam import AmqttSession
from chatmq.broker.connection import session_from_connect
from chatmq.broker.session import SmallQueue
from chatmq.broker.session_store import SessionStore
from chatmq.core.mqtt.codec import Connect, Decoder, Will, decode

STATES = ("new", "connected", "disconnected")
TRIGGERS = ("connect", "disconnect")


def _outcome(session: Session, start: str, trigger: str) -> tuple[str, str, bool, bool]:
    """(state after, error, connect time set, disconnect time set) of one trigger from one state."""
    if start == "connected":
        session.transitions.connect()
    elif start == "disconnected":
        session.transitions.disconnect()
    session.last_connect_time = session.last_disconnect_time = None
    try:
        getattr(session.transitions, trigger)()
        error = ""
    except MachineError as exc:
        error = str(exc)
    state = session.transitions.state
    return state, error, session.last_connect_time is not None, session.last_disconnect_time is not None


@pytest.mark.parametrize("start", STATES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_lean_states_match_transitions(start: str, trigger: str) -> None:
    """Same resulting state, same MachineError, same on-enter hooks (the connect/disconnect times)."""
    assert _outcome(AmqttSession(), start, trigger) == _outcome(Session(), start, trigger)


def test_lean_states_predicates() -> None:
    session = AmqttSession()
    assert session.transitions.is_new() and not session.transitions.is_connected()
    session.transitions.connect()
    assert session.transitions.is_connected() and repr(session).endswith("state=connected)")
    session.transitions.disconnect()
    assert session.transitions.is_disconnected()


def test_small_queue_behaves_like_a_queue() -> None:
    asyncio.run(_queue_behaves())


async def _queue_behaves() -> None:
    queue: SmallQueue[int] = SmallQueue()
    assert queue.empty() and queue.qsize() == 0
    waiter = asyncio.ensure_future(queue.get())  # a getter parked before any put
    await asyncio.sleep(0)
    for item in (1, 2, 3):
        queue.put_nowait(item)
    assert await asyncio.wait_for(waiter, 5) == 1
    assert [queue.get_nowait(), queue.get_nowait()] == [2, 3]  # FIFO
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    cancelled = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    queue.put_nowait(4)  # the cancelled getter must not swallow it
    assert queue.get_nowait() == 4
    first, second = asyncio.ensure_future(queue.get()), asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(5)
    first.cancel()  # woken for 5 but cancelled before it ran: the next getter takes 5
    await queue.put(6)
    assert await asyncio.wait_for(second, 5) == 5
    assert queue.get_nowait() == 6 and queue.empty()


def test_small_queue_drains_a_long_queue_in_order() -> None:
    queue: SmallQueue[int] = SmallQueue()
    for item in range(100_000):  # a bridge's offline queue can be this long: gets stay O(1)
        queue.put_nowait(item)
    taken = [queue.get_nowait() for _ in range(50_000)]
    queue.put_nowait(100_000)
    taken += [queue.get_nowait() for _ in range(queue.qsize())]
    assert taken == list(range(100_001)) and queue.empty()


_QUEUES = r"(?:retained_messages|delivered_message_queue|_pending_subscriptions|_pending_unsubscriptions)"


def test_amqtt_uses_only_what_small_queue_has() -> None:
    """SmallQueue replaces asyncio.Queue on these four queues: amqtt may call nothing else on them."""
    used = set()
    for path in Path(amqtt.__file__).parent.rglob("*.py"):
        used |= set(re.findall(rf"\b{_QUEUES}\.(\w+)", path.read_text()))
    assert used <= {"put", "put_nowait", "get", "get_nowait", "qsize", "empty"}, used


def test_lean_session_queues_are_small() -> None:
    session = AmqttSession()
    assert isinstance(session.retained_messages, SmallQueue)
    assert isinstance(session.delivered_message_queue, SmallQueue)


def test_nothing_of_amqtt_is_patched(run_broker: Any) -> None:
    """Our sessions are built per broker (chatmq/broker/session.py), not by repointing amqtt's module globals."""
    running = run_broker("ours")
    assert running.broker is not None
    assert broker_handler.Session is Session
    assert broker_handler.Queue is asyncio.Queue


class _Peer(WriterAdapter):
    def write(self, data: Any) -> None:
        raise AssertionError("nothing is written for a valid CONNECT")

    async def drain(self) -> None:
        pass

    def get_peer_info(self) -> tuple[str, int]:
        return ("10.0.0.7", 51234)

    def get_ssl_info(self) -> None:
        return None

    async def close(self) -> None:
        pass


_FIELDS = ("client_id", "clean_session", "will_flag", "will_topic", "will_message", "will_qos", "will_retain",
           "username", "password", "remote_address", "remote_port", "ssl_object", "keep_alive")  # fmt: skip
_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    client_id=_TEXT.filter(bool),
    clean=st.booleans(),
    keepalive=st.integers(0, 65535),
    username=st.none() | _TEXT,
    password=st.none() | st.binary(max_size=8),
    will=st.none() | st.builds(Will, _TEXT.filter(bool), st.binary(max_size=8), st.integers(0, 2), st.booleans()),
)
def test_a_connect_makes_the_session_amqtt_made(
    client_id: str, clean: bool, keepalive: int, username: str | None, password: bytes | None, will: Will | None
) -> None:
    if password is not None and username is None:
        username = "u"  # a password needs a user name [MQTT-3.1.2-22]: the codec refuses it before
    packet = Connect(client_id, clean, keepalive, username, password, will).encode()
    decoder = Decoder(None)
    decoder.feed(packet)
    frame = decoder.next_frame()
    assert frame is not None
    connect = decode(*frame)
    assert isinstance(connect, Connect)
    ours = session_from_connect(connect, _Peer())

    async def stock() -> Session:
        _handler, session = await BrokerProtocolHandler.init_from_connect(BufferReader(packet), _Peer(), _NoPlugins())
        return session

    theirs = asyncio.run(stock())
    assert {f: getattr(ours, f) for f in _FIELDS} == {f: getattr(theirs, f) for f in _FIELDS}


class _NoPlugins:
    async def fire_event(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_session_store_survives_a_burst_of_saves(redis_url: str, unique: Callable[[str], str]) -> None:
    """A reconnect storm saves thousands of sessions at once: with redis-py's default asyncio pool
    every save past 100 in flight failed with "Too many connections" and the session was lost."""
    asyncio.run(_burst_of_saves(redis_url, unique("storm")))


async def _burst_of_saves(redis_url: str, prefix: str) -> None:
    store = SessionStore(redis_url, 60)
    clients = [f"{prefix}-{i}" for i in range(600)]  # more than one load batch
    try:
        await asyncio.gather(*(store.save(c, {"user": c}, {f"chat/{c}/msg": 1}) for c in clients))
        stored = {s.client_id: s for s in await store.load_all() if s.client_id.startswith(prefix)}
        assert set(stored) == set(clients)
        assert stored[clients[-1]].subscriptions == {f"chat/{clients[-1]}/msg": 1}
    finally:
        await asyncio.gather(*(store.delete(c) for c in clients))
        await store.close()


def test_small_event_behaves_as_asyncio_event() -> None:
    """SmallEvent: set wakes every waiter, a cancelled waiter leaves the others waiting, clear re-arms."""
    asyncio.run(_small_event())


async def _small_event() -> None:
    from chatmq.broker.session import SmallEvent

    event = SmallEvent()
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    assert waiters[0].cancelled() and not waiters[1].done()
    event.set()
    assert await waiters[1] is True and await waiters[2] is True
    assert event.is_set() and await event.wait() is True
    event.clear()
    late = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await asyncio.wait_for(late, 1) is True
