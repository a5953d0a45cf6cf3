"""The checker: what the devices were told (acks) and saw (deliveries) against the stored history.

The promise under test: every acked client_msg_id is in history exactly once, with the seq its
ack named; each conversation's seqs are 1..n without gaps; every member was handed every message
of its conversations, in seq order, once (live or through catch-up).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.faultload import Record
from chatmq.core.store import open_store
from chatmq.core.store.base import Message


@dataclass
class Report:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    unacked: int = 0  # never answered before the harness gave up waiting (a liveness problem, not loss)
    stored: int = 0
    lost: int = 0  # acked "received" but not in history
    duplicated: int = 0  # one client_msg_id stored more than once
    seq_mismatch: int = 0  # the ack named a different seq than the one stored
    gaps: int = 0  # conversations whose seqs are not exactly 1..n
    undelivered: int = 0  # (member, message) pairs never handed to the member
    misordered: int = 0  # (member, conversation) streams not in strictly ascending seq
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.seq_mismatch or self.gaps or self.undelivered
                    or self.misordered or self.rejected or self.unacked)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


def read_history(store_url: str, convs: list[str]) -> dict[str, list[Message]]:
    store = open_store(store_url)
    try:
        logs: dict[str, list[Message]] = {}
        for conv in convs:
            messages: list[Message] = []
            after = 0
            while True:
                page = store.history(conv, after=after, limit=500)
                messages.extend(page.messages)
                if not page.messages or not page.has_more:
                    break
                after = page.messages[-1].seq
            logs[conv] = messages
        return logs
    finally:
        store.close()


def check(record: Record, history: dict[str, list[Message]], conversations: dict[str, list[str]]) -> Report:
    report = Report(sent=len(record.sent))
    with record.lock:
        acks = dict(record.acks)
        received = {key: list(value) for key, value in record.received.items()}
    stored_by_cmid: dict[str, list[Message]] = {}
    for conv, messages in history.items():
        report.stored += len(messages)
        seqs = [m.seq for m in messages]
        if seqs != list(range(1, len(seqs) + 1)):
            report.gaps += 1
            report.note(f"{conv}: seqs are not 1..{len(seqs)}")
        for m in messages:
            stored_by_cmid.setdefault(m.client_msg_id, []).append(m)
    for cmid, copies in stored_by_cmid.items():
        if len(copies) > 1:
            report.duplicated += len(copies) - 1
            report.note(f"{cmid} stored {len(copies)} times")
    for cmid in record.sent:
        ack = acks.get(cmid)
        if ack is None:
            report.unacked += 1
            continue
        if not ack.ok:
            report.rejected += 1
            report.note(f"{cmid} rejected: {ack.error}")
            continue
        report.acked += 1
        copies = stored_by_cmid.get(cmid)
        if not copies:
            report.lost += 1
            report.note(f"{cmid} acked seq {ack.seq} in {ack.conv} but not stored")
        elif copies[0].seq != ack.seq:
            report.seq_mismatch += 1
            report.note(f"{cmid} acked seq {ack.seq}, stored as {copies[0].seq}")
    for conv, members in conversations.items():
        expected = [(m.seq, m.client_msg_id) for m in history.get(conv, [])]
        for user in members:
            got = received.get((user, conv), [])
            seqs = [seq for seq, _ in got]
            if any(b <= a for a, b in itertools.pairwise(seqs)):
                report.misordered += 1
                report.note(f"{user} got {conv} out of order or twice")
            missing = Counter(expected) - Counter(got)
            if missing:
                report.undelivered += sum(missing.values())
                report.note(f"{user} never got {sum(missing.values())} messages of {conv}")
    return report
