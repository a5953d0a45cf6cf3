"""A small TCP front for a broker cluster: what a load balancer (HAProxy, a cloud LB) does for devices.

Each accepted connection goes to the next backend, round robin, skipping any that refuses the
connection (a stopped or killed node); bytes are piped both ways, and when either side closes the
other is closed too, so a device whose node died sees its connection drop, reconnects to the front
and lands on a live node. Runs an asyncio loop in a thread of its own.

    front = TcpFront([("127.0.0.1", 30001), ("127.0.0.1", 30002)]).start()
    ... connect to ("127.0.0.1", front.port) ...
    front.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Sequence

from chatmq.core.netutil import free_port

CHUNK = 65536


class TcpFront:
    def __init__(self, backends: Sequence[tuple[str, int]], host: str = "127.0.0.1", port: int | None = None,
                 connect_timeout: float = 1.0) -> None:
        self.backends = list(backends)
        self.host = host
        self.port = port or free_port()
        self.connect_timeout = connect_timeout
        self.chosen: Counter[tuple[str, int]] = Counter()  # connections sent to each backend
        self._next = itertools.cycle(range(len(self.backends)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpfront", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> TcpFront:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            upstream = await self._open_backend()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(_pipe(reader, up_writer))
                    group.create_task(_pipe(up_reader, writer))
            except* _Closed:
                pass  # one side closed: so does the other
            finally:
                up_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            backend = self.backends[next(self._next)]
            try:
                opened = await asyncio.wait_for(asyncio.open_connection(*backend), self.connect_timeout)
            except (OSError, TimeoutError):
                continue
            self.chosen[backend] += 1
            return opened
        return None  # every backend refused: the client sees its connection closed and retries

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error on either side; then end the other direction too."""
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()
    raise _Closed  # one direction ended: end the connection (the TaskGroup cancels the other pipe)


class _Closed(Exception):
    pass
