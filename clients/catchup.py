"""Per-conversation ordering: deliver messages in seq order, exactly once, and say what is missing.

Pure bookkeeping, no I/O: the client feeds it live messages and history pages and asks it which
range to fetch. Seqs are gapless from 1 per conversation (wire contract v1), so a jump means loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


@dataclass
class Sequencer:
    """``last`` is the highest seq handed to the application; None until the start point is known
    (messages offered before then wait in the buffer).

    ``strict=False`` is for clients without a history API: a gap cannot be filled, so it is skipped
    rather than holding back everything after it forever.
    """

    last: int | None = None
    strict: bool = True
    buffer: dict[int, Message] = field(default_factory=dict)

    def start(self, last: int) -> list[Message]:
        """Set the start point (the seq already seen); returns what became deliverable."""
        if self.last is None or last > self.last:
            self.last = last
        return self._drain()

    def offer(self, message: Message) -> list[Message]:
        """Take one message (live or from history); returns the messages now deliverable, in order."""
        seq = message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return []
        if self.last is not None and seq <= self.last:
            return []  # already delivered
        self.buffer.setdefault(seq, message)
        if self.last is None:
            if self.strict:
                return []
            self.last = seq - 1  # lenient: the first message seen sets the start
        return self._drain()

    def missing_after(self) -> int | None:
        """If messages wait behind a gap, the seq to fetch after; None when nothing is missing."""
        if self.last is None or not self.buffer:
            return None
        return self.last

    def _drain(self) -> list[Message]:
        ready: list[Message] = []
        assert self.last is not None
        for seq in [s for s in self.buffer if s <= self.last]:
            del self.buffer[seq]  # duplicates of what was delivered before the start moved
        if not self.strict and self.buffer and self.last + 1 not in self.buffer:
            self.last = min(self.buffer) - 1  # skip the unfillable gap
        while (nxt := self.buffer.pop(self.last + 1, None)) is not None:
            ready.append(nxt)
            self.last += 1
        return ready
