"""A broker served in-process on its own event-loop thread, stock amqtt or ours, with our hooks.

The defect regression tests run each case against both: stock ``amqtt.broker.Broker`` (marked
xfail strict, so the suite proves the defect exists) and ``ChatBroker``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from amqtt.broker import Broker

from chatmq.broker.hooks import Hooks
from chatmq.broker.server import chat_broker, serve
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port
from tests.broker.conftest import SECRET
from tests.broker.stock import stock_plugins

STOCK, OURS = "stock", "ours"
BOTH = [pytest.param(STOCK, marks=pytest.mark.xfail(strict=True, reason="amqtt 0.12.1 defect")), OURS]


def stock_broker(config: dict[str, Any], loop: asyncio.AbstractEventLoop, settings: Settings, hooks: Hooks) -> Broker:
    return Broker({**config, "plugins": stock_plugins(hooks)}, loop=loop)


@dataclass
class InProcessBroker:
    settings: Settings
    kind: str
    brokers: list[Broker] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.settings.mqtt_port

    @property
    def ws_port(self) -> int:
        return self.settings.ws_port

    @property
    def broker(self) -> Broker:
        return self.brokers[-1]

    def start(self) -> InProcessBroker:
        factory = stock_broker if self.kind == STOCK else chat_broker

        def make(config: dict[str, Any], loop: asyncio.AbstractEventLoop, settings: Settings, hooks: Hooks) -> Broker:
            made = factory(config, loop, settings, hooks)
            self.brokers.append(made)
            return made

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main() -> None:
            started = asyncio.Event()
            self._task = asyncio.ensure_future(serve(self.settings, ready=started, broker_factory=make))
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait([self._task, waiter], return_when=asyncio.FIRST_COMPLETED)
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        self._loop = loop
        self._thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(30), "broker did not start"
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # raise the start-up error
        return self

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is None or self._thread is None:
            return
        task = self._task
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._loop = self._thread = self._task = None


def make_settings(tmp_path: Path, store_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "store_url": store_url,
        "secret_key": SECRET,
        "redis_url": redis_url,
        "mqtt_port": free_port(),
        "ws_port": free_port(),
        "membership_refresh_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def run_broker(
    tmp_path: Path, store_url: str, redis_url: str
) -> Iterator[Any]:
    """``run_broker(kind, **settings)`` starts one; all are stopped at teardown."""
    started: list[InProcessBroker] = []

    def start(kind: str, **overrides: Any) -> InProcessBroker:
        running = InProcessBroker(make_settings(tmp_path, store_url, redis_url, **overrides), kind).start()
        started.append(running)
        return running

    yield start
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(lambda running: running.stop(), started))
