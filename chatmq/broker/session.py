"""The broker's sessions: amqtt's Session with a two-field state machine and small queues, made
from a CONNECT or restored, per broker instance.

Why, per-connection memory: amqtt 0.12 spends about 52 KiB of Python heap on every connected client.

Measured with tracemalloc in an in-process broker with 1,000 connected devices (bench/connections.py
measures the RSS): the two largest costs are bookkeeping, not connection state:

- amqtt's Session builds a ``transitions.Machine`` per session: ~16 KiB and ~235 objects
  (events, transitions, bound partials for ``may_*``/``to_*``/``is_*``) for a three-state machine
  with two triggers. It is also ~15% of the broker's CPU per CONNECT, which matters in a reconnect
  storm. ``SessionStates`` is the same machine in one object with two fields.
- every ``asyncio.Queue`` holds three ``collections.deque`` plus an ``Event`` with a fourth, and
  CPython allocates a 64-slot block (~760 bytes) for each deque up front, even empty: ~3 KiB per
  queue, and a session plus its handler have four queues that are empty almost always (offline
  messages, amqtt's delivery queue, pending (un)subscriptions). ``SmallQueue`` keeps each in one
  list, 56 bytes empty.

The broker builds its sessions itself, per broker instance (``AmqttSession`` in the seam,
chatmq/broker/amqtt_seam.py, with ``SessionStates`` for the machine and this module's ``SmallQueue``
for its queues; ``session_from_connect`` in chatmq/broker/connection.py fills one from a CONNECT).
Nothing of amqtt is patched. Behaviour is unchanged: the lean state machine raises the same
``MachineError`` for the one invalid trigger and runs the same callbacks (tests/broker/test_session.py
checks it against ``transitions`` for every state and trigger).
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SmallQueue(Generic[T]):
    """The part of ``asyncio.Queue`` amqtt uses on a session's and a handler's queues (``put``,
    ``put_nowait``, ``get``, ``get_nowait``, ``qsize``, ``empty``), unbounded, over one list: 56 bytes
    when empty, where an ``asyncio.Queue`` costs ~3 KiB. Built on public asyncio only (futures), so no
    asyncio internal is touched. FIFO for items and for waiting getters; a cancelled getter never
    takes an item."""

    __slots__ = ("_head", "_items", "_waiting")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0  # items before it were taken (amortised O(1) gets, also for a long offline queue)
        self._waiting: list[asyncio.Future[None]] | None = None  # made by the first getter that waits

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head == len(self._items)

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        if self._waiting:
            self._wake_one()

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        items, head = self._items, self._head
        if head == len(items):
            raise asyncio.QueueEmpty
        item: T = items[head]
        items[head] = None
        head += 1
        if head * 2 >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    async def get(self) -> T:
        while self.empty():
            getter = asyncio.get_running_loop().create_future()
            if self._waiting is None:
                self._waiting = []
            self._waiting.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # a no-op once woken
                if self._waiting is not None and getter in self._waiting:
                    self._waiting.remove(getter)
                if not self.empty() and not getter.cancelled():
                    self._wake_one()  # it was woken for an item it will not take: the next getter takes it
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        while self._waiting:
            getter = self._waiting.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class SmallEvent:
    """``asyncio.Event`` (``set``, ``clear``, ``is_set``, ``wait``) in one slotted object of 56 bytes
    at rest: an ``asyncio.Event`` keeps an empty deque of waiters, ~760 bytes (a 64-slot block), and a
    connection had four of them. The waiters' list exists only while someone waits. Public asyncio
    only (futures); a cancelled waiter leaves the others waiting, as with ``asyncio.Event``."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True
