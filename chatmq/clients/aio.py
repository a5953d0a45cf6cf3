"""The asyncio flavour: the same ChatClient core, with awaitables and an async event stream.

Nothing is duplicated: blocking calls (connect, join, close) run in the loop's default executor,
send futures are wrapped with asyncio.wrap_future, and events cross threads through
loop.call_soon_threadsafe into an asyncio.Queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatmq.clients.chat import ChatClient
from chatmq.clients.events import Ack, AckTimeout, Event


class AsyncChatClient:
    """Same arguments as ChatClient. Use ``async with`` or await connect()/close()."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.core = ChatClient(*args, queue_events=False, **kwargs)
        self._events: asyncio.Queue[Event] | None = None

    async def connect(self, timeout: float = 10.0) -> AsyncChatClient:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        self._events = events
        self.core.on_event(lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        await asyncio.to_thread(self.core.connect, timeout)
        return self

    async def close(self, *, abrupt: bool = False) -> None:
        await asyncio.to_thread(self.core.close, abrupt=abrupt)

    async def __aenter__(self) -> AsyncChatClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def join(self, conv: str, *, after: int | None = None) -> None:
        await asyncio.to_thread(self.core.join, conv, after=after)

    async def leave(self, conv: str) -> None:
        await asyncio.to_thread(self.core.leave, conv)

    async def watch_presence(self, user: str) -> None:
        await asyncio.to_thread(self.core.watch_presence, user)

    async def send(self, conv: str, body: str, **kwargs: Any) -> Ack:
        """Await the server's ack (received with its seq, or rejected)."""
        return await asyncio.wrap_future(self.core.send(conv, body, **kwargs))

    async def edit(self, conv: str, seq: int, body: str, **kwargs: Any) -> Ack:
        return await asyncio.wrap_future(self.core.edit(conv, seq, body, **kwargs))

    async def delete(self, conv: str, seq: int, **kwargs: Any) -> Ack:
        return await asyncio.wrap_future(self.core.delete(conv, seq, **kwargs))

    async def react(self, conv: str, seq: int, emoji: str, **kwargs: Any) -> Ack:
        return await asyncio.wrap_future(self.core.react(conv, seq, emoji, **kwargs))

    async def unreact(self, conv: str, seq: int, emoji: str, **kwargs: Any) -> Ack:
        return await asyncio.wrap_future(self.core.unreact(conv, seq, emoji, **kwargs))

    def on_ack_timeout(self, listener: Callable[[AckTimeout], None]) -> None:
        """ChatClient.on_ack_timeout, the listener called on the running event loop."""
        loop = asyncio.get_running_loop()
        self.core.on_ack_timeout(lambda timeout: loop.call_soon_threadsafe(listener, timeout))

    def mark_read(self, conv: str, seq: int | None = None) -> bool:
        return self.core.mark_read(conv, seq)

    def typing(self, conv: str, typing: bool = True) -> None:
        self.core.typing(conv, typing)

    async def next_event(self, timeout: float | None = None) -> Event:
        if self._events is None:
            raise RuntimeError("connect() first")
        return await asyncio.wait_for(self._events.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self.next_event()
