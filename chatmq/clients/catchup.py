"""Per-conversation ordering: deliver messages in seq order, exactly once, and say what is missing.

Pure bookkeeping, no I/O: the client feeds it live messages and history pages and asks it which
range to fetch. Seqs are gapless from 1 per conversation (wire contract v1), so a jump in live
delivery means a message still to fetch. Live messages may also arrive out of seq order (after a
broker restart): they wait in the buffer and go to the application in order, each once.

The one exception to "gapless" is a store hole: a seq the store reserved but never wrote (a writer
died between the two, docs/reliability.md). History is the authority: when pages fetched with
``after`` show the same gap ``HOLE_CONFIRMATIONS`` times (a write still under way fills it by the
next fetch), the gap is skipped, so one lost reservation never holds back the conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
HOLE_CONFIRMATIONS = 2  # history pages, fetched apart in time, that must show a gap before it is skipped


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
    holes: list[tuple[int, int]] = field(default_factory=list)  # (first, last) seqs skipped as store holes
    _gaps_seen: dict[tuple[int, int], int] = field(default_factory=dict)

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

    def take_history(self, after: int, messages: list[Message]) -> list[Message]:
        """Take one history page fetched with ``after=after`` (the store's messages above it, in
        seq order); returns the messages now deliverable. A gap between ``after`` and the page's
        first message, or inside the page, is a seq the store does not have: skipped once seen
        ``HOLE_CONFIRMATIONS`` times (see the module docstring)."""
        ready: list[Message] = []
        previous = after
        for message in sorted(messages, key=_seq_key):
            seq = _seq_key(message)
            if seq < 1:
                continue
            if seq > previous + 1 and self.last is not None and previous <= self.last < seq - 1:
                gap = (previous + 1, seq - 1)
                self._gaps_seen[gap] = self._gaps_seen.get(gap, 0) + 1
                if self._gaps_seen[gap] >= HOLE_CONFIRMATIONS:
                    del self._gaps_seen[gap]
                    self.holes.append(gap)
                    self.last = seq - 1
            ready += self.offer(message)
            previous = max(previous, seq)
        return ready

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


def _seq_key(message: Message) -> int:
    seq = message.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
