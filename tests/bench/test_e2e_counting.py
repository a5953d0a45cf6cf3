"""The e2e benchmark's bookkeeping: what it counts as a completed message must not hide a fault."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from bench.e2e import ACK, Conversation, Load, PhaseStats, Target


class FakeDevice:
    """Stands in for a LeanClient: records what was published."""

    def __init__(self, username: str) -> None:
        self.username = username
        self.published: list[tuple[str, bytes]] = []

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))


def make_load(members: tuple[str, ...] = ("a", "b", "c")) -> tuple[Load, Conversation]:
    conv = Conversation("c0", members)
    load = Load(Target("chatmq", 0, chat=True), [conv], "t")
    load.clients = {m: FakeDevice(m) for m in members}  # type: ignore[misc]
    load.stats = PhaseStats("test", None, 1.0)
    load.phase_end_ns = time.monotonic_ns() + 10**12
    return load, conv


def send(load: Load, conv: Conversation, **kwargs: object) -> tuple[str, str]:
    cmid = load.send(conv, **kwargs)  # type: ignore[arg-type]
    sender = next(name for name, dev in load.clients.items() if dev.published and  # type: ignore[attr-defined]
                  orjson.loads(dev.published[-1][1])["client_msg_id"] == cmid)  # fmt: skip
    return cmid, sender


def deliver(load: Load, to: str, sender: str, cmid: str) -> None:
    payload = orjson.dumps({"sender": sender, "client_msg_id": cmid})
    load.on_message(load.clients[to], "chat/c0/msg", payload)  # type: ignore[arg-type]


def test_a_duplicate_delivery_does_not_stand_in_for_a_missing_one() -> None:
    load, conv = make_load()
    cmid, sender = send(load, conv)
    first, second = (m for m in conv.members if m != sender)
    load.arrived(cmid, ACK)
    deliver(load, first, sender, cmid)
    deliver(load, first, sender, cmid)  # the same member twice: the other one still waits
    assert load.stats is not None
    assert load.stats.complete == 0 and load.stats.duplicates == 1
    assert load.missing[cmid] == {second}
    deliver(load, second, sender, cmid)
    assert load.stats.complete == 1
    deliver(load, second, sender, cmid)  # after completion, still a duplicate
    assert load.stats.duplicates == 2


def test_a_message_completed_after_the_phase_is_late_not_counted() -> None:
    load, conv = make_load(("a", "b"))
    cmid, sender = send(load, conv)
    load.phase_end_ns = time.monotonic_ns() - 1
    load.arrived(cmid, ACK)
    deliver(load, next(m for m in conv.members if m != sender), sender, cmid)
    assert load.stats is not None
    assert (load.stats.complete, load.stats.late) == (0, 1)


def test_latency_is_timed_from_the_intended_send_time() -> None:
    load, conv = make_load(("a", "b"))
    intended = time.monotonic_ns() - 500 * 10**6  # the generator is half a second behind its schedule
    cmid, sender = send(load, conv, intended_ns=intended)
    deliver(load, next(m for m in conv.members if m != sender), sender, cmid)
    assert load.stats is not None
    assert load.stats.deliver_ms[0] >= 500
    assert load.stats.lag_ms[0] >= 500


def test_the_open_loop_sends_on_schedule_and_the_sender_never_counts_as_a_recipient() -> None:
    load, _ = make_load(("a", "b"))

    async def run() -> None:
        await load.open_loop(0.2, 100)

    asyncio.run(run())
    assert load.stats is not None
    assert load.stats.sent == pytest.approx(20, abs=2)
    assert all(len(missing) == 2 for missing in load.missing.values())  # the ack and the other member
