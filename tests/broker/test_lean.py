"""chatmq/broker/lean.py: the lean session state machine and queues behave like amqtt's originals, and the
session store survives the burst of writes of a reconnect storm (memory figures: bench/connections.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from amqtt.session import Session
from transitions import MachineError

from chatmq.broker.lean import LeanQueue, LeanSession
from chatmq.broker.sessions import SessionStore

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
    assert _outcome(LeanSession(), start, trigger) == _outcome(Session(), start, trigger)


def test_lean_states_predicates() -> None:
    session = LeanSession()
    assert session.transitions.is_new() and not session.transitions.is_connected()
    session.transitions.connect()
    assert session.transitions.is_connected() and repr(session).endswith("state=connected)")
    session.transitions.disconnect()
    assert session.transitions.is_disconnected()


def test_lean_queue_behaves_like_a_queue() -> None:
    asyncio.run(_queue_behaves())


async def _queue_behaves() -> None:
    queue: LeanQueue[int] = LeanQueue()
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
    queue.task_done(), queue.task_done(), queue.task_done(), queue.task_done()
    await asyncio.wait_for(queue.join(), 5)


def test_lean_queue_bounded_put_waits() -> None:
    asyncio.run(_bounded_put_waits())


async def _bounded_put_waits() -> None:
    queue: LeanQueue[int] = LeanQueue(maxsize=1)
    queue.put_nowait(1)
    putter = asyncio.ensure_future(queue.put(2))
    await asyncio.sleep(0)
    assert not putter.done() and queue.full()
    assert queue.get_nowait() == 1
    await asyncio.wait_for(putter, 5)
    assert queue.get_nowait() == 2


def test_lean_session_queues_are_lean() -> None:
    session = LeanSession()
    assert isinstance(session.retained_messages, LeanQueue)
    assert isinstance(session.delivered_message_queue, LeanQueue)


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
