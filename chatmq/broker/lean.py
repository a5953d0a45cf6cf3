"""Per-connection memory: amqtt 0.12 spends about 52 KiB of Python heap on every connected client.

Measured with tracemalloc in an in-process broker with 1,000 connected devices (bench/connections.py
measures the RSS): the two largest costs are bookkeeping, not connection state:

- ``Session._init_states`` builds a ``transitions.Machine`` per session: ~16 KiB and ~235 objects
  (events, transitions, bound partials for ``may_*``/``to_*``/``is_*``) for a three-state machine
  with two triggers. It is also ~15% of the broker's CPU per CONNECT, which matters in a reconnect
  storm. ``LeanStates`` is the same machine in one object with two fields.
- every ``asyncio.Queue`` holds three ``collections.deque`` plus an ``Event`` with a fourth, and
  CPython allocates a 64-slot block (~760 bytes) for each deque up front, even empty: ~3 KiB per
  queue, and a session plus its handler have four queues that are empty almost always (offline
  messages, amqtt's delivery queue, pending (un)subscriptions). ``LeanQueue`` keeps them in lists,
  which cost 56 bytes empty; these queues hold a handful of items (at most the session queue limit).

``install()`` points amqtt's CONNECT handling at ``LeanSession``/``LeanQueue``; ``LeanSession`` is
also what the broker builds for restored offline sessions. Behaviour is unchanged: the lean state
machine raises the same ``MachineError`` for the one invalid trigger and runs the same callbacks
(tests/broker/test_lean.py checks it against ``transitions`` for every state and trigger).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from amqtt.mqtt.protocol import broker_handler
from amqtt.session import Session
from transitions import MachineError

from chatmq.broker import amqtt_seam

T = TypeVar("T")

NEW, CONNECTED, DISCONNECTED = "new", "connected", "disconnected"


class LeanStates:
    """Session.states with Session's transitions: connect (new|disconnected -> connected) and
    disconnect (any -> disconnected), calling the session's on-enter hooks like transitions does."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = NEW

    def connect(self) -> bool:
        if self.state == CONNECTED:
            raise MachineError(f"Can't trigger event connect from state {self.state}!")
        self.state = CONNECTED
        amqtt_seam.entered_connected(self._session)
        return True

    def disconnect(self) -> bool:
        self.state = DISCONNECTED
        amqtt_seam.entered_disconnected(self._session)
        return True

    def is_new(self) -> bool:
        return self.state == NEW

    def is_connected(self) -> bool:
        return self.state == CONNECTED

    def is_disconnected(self) -> bool:
        return self.state == DISCONNECTED

    def is_state(self, state: str, _model: Any = None) -> bool:
        return self.state == state


class _SmallDeque(list[Any]):
    """The deque methods asyncio's Queue and Event use, on a list (56 bytes empty, not 760)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class LeanQueue(asyncio.Queue[T]):
    """An asyncio.Queue for the few items a session queue holds; see the module docstring."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._getters = _SmallDeque()  # type: ignore[assignment]
        self._putters = _SmallDeque()  # type: ignore[assignment]
        self._finished._waiters = _SmallDeque()  # type: ignore[attr-defined]

    def _init(self, maxsize: int) -> None:
        self._queue = _SmallDeque()


class LeanSession(Session):
    def __init__(self) -> None:
        super().__init__()
        self.retained_messages = LeanQueue()
        self.delivered_message_queue = LeanQueue()

    def _init_states(self) -> None:
        self.transitions = LeanStates(self)  # type: ignore[assignment]


def install() -> None:
    """Make amqtt's CONNECT handling build LeanSessions and its handlers LeanQueues (process-wide:
    ``broker_handler`` looks both names up when a connection arrives; idempotent)."""
    broker_handler.Session = LeanSession  # type: ignore[misc]
    broker_handler.Queue = LeanQueue  # type: ignore[misc]
