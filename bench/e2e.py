"""End-to-end benchmark: durable, acked and delivered chat messages per second, and their latency.

Devices (one MQTT connection each, lean asyncio clients from bench/leanmqtt.py) are the members
of many 2-, 3- and 4-member conversations; a random member of a random conversation sends a
200-byte message. The targets run on the same load, interleaved: every target is started once,
then each phase is measured on every target in turn (the order rotates from phase to phase), so a
slow minute of the shared machine hits all of them.

  chatmq     the product: ``python -m chatmq.broker`` + ``python -m chatmq.bridge`` on SQLite (synchronous=FULL) and a
             private Redis, the per-sender rate limiter at its production settings (``--no-rate-limit``
             turns it off). A message counts when the server's ack (user/{u}/ack: stored, seq assigned)
             reached the sender and the stored message (chat/{conv}/msg) reached every other member.
  naive      stock amqtt 0.12.1 (on uvloop, as chatmq's broker) + bench/naive_bridge.py (one
             INSERT+commit per message, then publish and wait for the PUBACKs, Nagle off): the same
             contract without batching or the broker's work.
  chatmq-rabbitmq  (only when asked for) the same bridge on a private RabbitMQ node (Debian's 3.10,
             its MQTT plugin) instead of chatmq's broker; devices and the bridge log in as internal users
  mosquitto  a private Mosquitto relaying the sends straight to the members, nothing stored, at its
             best settings (no in-flight cap, TCP_NODELAY): the ceiling (the ack is Mosquitto's PUBACK).

Phases: ``max`` (closed loop: each load process keeps --window messages unacknowledged; the
sustained rate, --max-seconds), then open-loop offered rates (--rates, --seconds each: 60 s by
default, so WAL checkpoints fall inside). A rate far beyond what a target sustains ends its ladder.

How it counts (so that nothing hides a fault):
- the rate is the messages *completed within the phase* (acked and delivered to every other
  member) divided by the phase's length; those completed in the drain after it are shown as late;
- each message waits for a set of distinct recipients: a duplicate delivery is counted as such and
  never stands in for a missing one;
- open-loop latency is timed from each message's *intended* send time (its slot in the schedule),
  not from when the generator got round to sending it: a generator that falls behind cannot hide
  the delay (no coordinated omission); its own lag is reported too;
- beside every figure: the server's CPU per message (broker, bridge, Redis, notifier; from /proc,
  from the phase's start until its messages are drained, per message completed), the load
  generator's own CPU during the phase, and the machine's load average.

    .venv/bin/python -m bench.e2e                              # about 15 minutes
    .venv/bin/python -m bench.e2e --quick                      # about 3 minutes
    .venv/bin/python -m bench.e2e --targets chatmq --rates 2000,4000 --seconds 60
    .venv/bin/python -m bench.e2e --plot docs/img/e2e-latency.png   # also redraw the figure
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.cpu import machine_load, processes_cpu_s, self_cpu_s
from bench.leanmqtt import LeanClient, keep_alive
from bench.rabbitmq import RabbitCluster, RabbitNode
from bench.relay import popen, progress, start_amqtt, start_mosquitto, stopper, wait_started
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.netutil import free_port
from chatmq.core.store import open_store
from chatmq.core.store.base import PushTarget, Webhook

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-e2e-secret-key-0123456789abcdef0123456789abcdef"
BODY = "x" * 200
# RabbitMQ's MQTT plugin lets a subscriber have 10 unacknowledged deliveries by default (mqtt.prefetch);
# the bridge acknowledges a send once stored, in batches, so it needs more in flight: 1000 (measured
# here: closed-loop rate 786 vs 483 msg/s, RabbitMQ CPU 0.84 vs 1.70 ms/msg). BENCH_RABBIT_PREFETCH overrides.
RABBIT_PREFETCH = int(os.environ.get("BENCH_RABBIT_PREFETCH", "1000"))
SERVICE_PASSWORD = "bench-e2e-service-password"  # the bridge's, where the broker cannot check tokens
TARGETS = ("chatmq", "naive", "mosquitto", "chatmq-rabbitmq")
DEFAULT_TARGETS = TARGETS[:3]  # chatmq-rabbitmq only when asked for


@dataclass(frozen=True)
class Conversation:
    name: str
    members: tuple[str, ...]


def conversations(count: int) -> list[Conversation]:
    """Sizes cycle 2, 3, 4: every member is its own user with one device."""
    return [Conversation(f"c{i}", tuple(f"c{i}m{k}" for k in range(2 + i % 3))) for i in range(count)]


@dataclass
class Target:
    name: str
    port: int
    chat: bool  # the chat contract (server ack + stored message) or plain relay (PUBACK + the send itself)
    passwords: dict[str, str] = field(default_factory=dict)
    stops: list[Callable[[], None]] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # server processes whose CPU time is reported

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()


# ---- targets -----------------------------------------------------------------------------------


def start_chatmq(work: Path, redis_url: str, convs: list[Conversation], notifier: bool = False,
                 rate_limit: bool = True, rabbitmq: RabbitNode | None = None, commit_delay_ms: float = 0
                 ) -> Target:  # fmt: skip
    """chatmq's broker and bridge; with ``rabbitmq`` the bridge runs on that node instead of chatmq's broker."""
    store_url = "sqlite:///" + str(work / "chatmq.db")
    store = open_store(store_url)
    unused = hash_password("not-used-devices-log-in-with-tokens")
    sink_port = free_port()
    try:
        for conv in convs:
            for member in conv.members:
                store.create_user(member, unused)
                if notifier:  # every member has a phone (the lean devices send no presence: all "offline")
                    store.put_push_target(PushTarget(member, "phone", "fcm", f"token-{member}"))
            store.create_conversation(conv.name, list(conv.members))
        if notifier:
            store.add_webhook(Webhook("bench", f"http://127.0.0.1:{sink_port}/hook", "s", ("message.created",)))
    finally:
        store.close()
    port, ws_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATMQ_")}
    env.update(
        CHATMQ_DATA_DIR=str(work / "data"), CHATMQ_STORE_URL=store_url, CHATMQ_REDIS_URL=redis_url,
        CHATMQ_SECRET_KEY=SECRET, CHATMQ_HOST="127.0.0.1", CHATMQ_MQTT_PORT=str(port),
        CHATMQ_WS_PORT=str(ws_port), CHATMQ_LOG_LEVEL="WARNING",
    )  # fmt: skip
    if not rate_limit:
        env["CHATMQ_MESSAGES_PER_S"] = "0"
    if commit_delay_ms:
        env["CHATMQ_BRIDGE_COMMIT_DELAY_MS"] = f"{commit_delay_ms:g}"
    if rabbitmq is None:
        target = Target("chatmq", port, chat=True)
        broker = popen([sys.executable, "-m", "chatmq.broker"], work / "broker.log", env)
        target.stops.append(stopper(broker))
        wait_started("chatmq broker", broker, port, work / "broker.log")
        target.pids = {"broker": broker.pid}
    else:  # RabbitMQ's internal users: the devices' passwords below, the bridge's service password
        target = Target("chatmq-rabbitmq", rabbitmq.mqtt_port, chat=True, pids={"rabbitmq": rabbitmq.vm_pid or 0})
        env.update(CHATMQ_BROKER_PORT=str(rabbitmq.mqtt_port), CHATMQ_SERVICE_PASSWORD=SERVICE_PASSWORD)
    bridge = popen([sys.executable, "-m", "chatmq.bridge"], work / "bridge.log", env)
    target.stops.append(stopper(bridge))
    target.pids["bridge"] = bridge.pid
    if notifier:  # push and webhooks running beside: a webhook per message, notifications collapsed
        sink = popen([sys.executable, "-m", "bench.sink", "--port", str(sink_port)], work / "sink.log", env)
        target.stops.append(stopper(sink))
        env = {**env, "CHATMQ_PUSH_GATEWAY_URL": f"http://127.0.0.1:{sink_port}/notify"}
        notify = popen([sys.executable, "-m", "chatmq.cli", "notifier"], work / "notifier.log", env)
        target.stops.insert(0, stopper(notify))
        target.pids["notifier"] = notify.pid
    target.passwords = {m: issue_token(SECRET, m, 24 * 3600).token for c in convs for m in c.members}
    return target


def start_chatmq_rabbitmq(work: Path, redis_url: str, convs: list[Conversation], rate_limit: bool) -> Target:
    """chatmq's bridge on a private RabbitMQ node (bench/rabbitmq.py) with internal users."""
    prefetch = f"mqtt.prefetch = {RABBIT_PREFETCH}\n"
    rabbit = RabbitCluster(size=1, plugins=("rabbitmq_mqtt",), extra_config=prefetch).start()
    try:
        node = rabbit.nodes[0]
        passwords = {m: f"pw-{m}" for c in convs for m in c.members}
        node.add_users({**passwords, SERVICE_USER: SERVICE_PASSWORD})
        target = start_chatmq(work, redis_url, convs, rate_limit=rate_limit, rabbitmq=node)
    except BaseException:
        rabbit.stop()
        raise
    target.stops.insert(0, rabbit.stop)  # stopped last
    target.passwords = passwords
    return target


def start_naive(work: Path) -> Target:
    broker = start_amqtt(work)
    target = Target("naive", broker.port, chat=True, stops=[broker.stop])
    log = work / "naive-bridge.log"
    bridge = popen([sys.executable, "-m", "bench.naive_bridge", "--port", str(broker.port),
                    "--db", str(work / "naive.db")], log)  # fmt: skip
    target.stops.append(stopper(bridge))
    target.pids = {"amqtt": broker.pid or 0, "naive_bridge": bridge.pid}
    return target


def start_relay(work: Path) -> Target:
    broker = start_mosquitto(work)
    return Target("mosquitto", broker.port, chat=False, stops=[broker.stop], pids={"mosquitto": broker.pid or 0})


# ---- the load (one or more processes) ------------------------------------------------------------

ACK = ""  # in a message's set of missing recipients: the sender's ack (no member is named "")


@dataclass
class PhaseStats:
    phase: str
    offered: float | None
    seconds: float
    sent: int = 0
    acked: int = 0
    complete: int = 0  # acked and delivered to every other member, within the phase
    late: int = 0  # completed too, but only in the drain after the phase
    duplicates: int = 0  # an ack or a delivery a recipient had already had
    ack_ms: list[float] = field(default_factory=list)
    deliver_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)  # open loop: actual - intended send time
    rejected: list[str] = field(default_factory=list)  # error codes of rejected acks
    unacked: int = 0  # after the drain: messages never acked
    undelivered: int = 0  # after the drain: deliveries still missing (member x message)
    generator_cpu_s: float = 0.0  # this load process's CPU time during the phase


class Load:
    """Every device of this process's conversations, the send schedule and the bookkeeping."""

    def __init__(self, target: Target, convs: list[Conversation], tag: str) -> None:
        self.target, self.convs, self.tag = target, convs, tag
        self.clients: dict[str, LeanClient] = {}
        self.sent_at: dict[str, int] = {}  # client_msg_id -> intended send time (monotonic ns)
        self.missing: dict[str, set[str]] = {}  # client_msg_id -> recipients (and ACK) still missing
        self.finished: set[str] = set()  # completed this phase: anything arriving for them is a duplicate
        self.phase_end_ns = 0
        self.stats: PhaseStats | None = None
        self.inflight = 0
        self.freed = asyncio.Event()
        self.counter = 0

    async def connect(self) -> None:
        gate = asyncio.Semaphore(50)

        async def one(conv: Conversation, member: str) -> None:
            client = LeanClient(f"{member}.bench", member, self.target.passwords.get(member), 120, self.on_message)
            self.clients[member] = client
            async with gate:
                await client.connect("127.0.0.1", self.target.port, clean=True)
                if self.target.chat:
                    codes = await client.subscribe([(f"chat/{conv.name}/msg", 1), (f"user/{member}/ack", 1)])
                else:
                    codes = await client.subscribe([(f"chat/{conv.name}/send/+", 1)])
                if any(code >= 0x80 for code in codes):
                    raise RuntimeError(f"{member}: subscription refused {codes}")

        await asyncio.gather(*(one(conv, m) for conv in self.convs for m in conv.members))

    def send(self, conv: Conversation | None = None, intended_ns: int | None = None) -> str:
        conv = conv or random.choice(self.convs)
        sender = random.choice(conv.members)
        self.counter += 1
        cmid = f"{self.tag}-{self.counter}"
        payload = orjson.dumps({"client_msg_id": cmid, "body": BODY})
        now = time.monotonic_ns()
        self.sent_at[cmid] = now if intended_ns is None else intended_ns
        self.missing[cmid] = {m for m in conv.members if m != sender} | {ACK}
        self.inflight += 1
        if self.stats is not None:
            self.stats.sent += 1
            if intended_ns is not None:
                self.stats.lag_ms.append((now - intended_ns) / 1e6)
        acked = self.clients[sender].publish_nowait(f"chat/{conv.name}/send/{sender}", payload, qos=1)
        if not self.target.chat and acked is not None:
            acked.add_done_callback(lambda f, cmid=cmid: None if f.exception() else self.arrived(cmid, ACK))
        return cmid

    def on_message(self, client: LeanClient, topic: str, payload: bytes) -> None:
        if self.target.chat and topic.startswith("user/"):
            ack = orjson.loads(payload)
            if ack["status"] != "received" and self.stats is not None:
                self.stats.rejected.append(ack["error"]["code"])
            self.arrived(ack["client_msg_id"], ACK)
            return
        message = orjson.loads(payload)
        sender = message["sender"] if self.target.chat else topic.rsplit("/", 1)[1]
        if sender != client.username:
            self.arrived(message["client_msg_id"], client.username)

    def arrived(self, cmid: str, recipient: str) -> None:
        """``recipient`` (a member, or ACK for the sender's ack) got message ``cmid``."""
        missing = self.missing.get(cmid)
        if missing is None or recipient not in missing:
            if self.stats is not None and (missing is not None or cmid in self.finished):
                self.stats.duplicates += 1
            return  # else a message of an earlier phase or of the warm-up
        missing.remove(recipient)
        now = time.monotonic_ns()
        if self.stats is not None:
            latency = (now - self.sent_at[cmid]) / 1e6
            (self.stats.ack_ms if recipient == ACK else self.stats.deliver_ms).append(latency)
        if recipient == ACK:
            self.inflight -= 1
            self.freed.set()
            if self.stats is not None:
                self.stats.acked += 1
        if missing:
            return
        del self.missing[cmid]
        del self.sent_at[cmid]
        self.finished.add(cmid)
        if self.stats is not None:
            if now <= self.phase_end_ns:
                self.stats.complete += 1
            else:
                self.stats.late += 1

    async def closed_loop(self, seconds: float, window: int) -> None:
        self.phase_end_ns = time.monotonic_ns() + int(seconds * 1e9)
        while (left := self.phase_end_ns - time.monotonic_ns()) > 0:
            while self.inflight < window:
                self.send()
            self.freed.clear()
            try:
                await asyncio.wait_for(self.freed.wait(), left / 1e9)
            except TimeoutError:
                break

    async def open_loop(self, seconds: float, rate: float) -> None:
        """Message n is due at start + n/rate; it is timed from then, however late it is sent."""
        start = time.monotonic_ns()
        self.phase_end_ns = start + int(seconds * 1e9)
        period = 1e9 / rate
        n = 0
        while (now := time.monotonic_ns()) < self.phase_end_ns:
            due = int((now - start) / period) + 1
            while n < due:
                self.send(intended_ns=start + int(n * period))
                n += 1
            await asyncio.sleep(0.001)

    async def drain(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self.missing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def reset(self) -> None:
        self.missing.clear()
        self.sent_at.clear()
        self.finished.clear()
        self.inflight = 0


async def run_load(target: Target, convs: list[Conversation], tag: str, phases: list[tuple[str, float, float]],
                   window: int, ready: Any, go: Any, out: Any) -> None:  # fmt: skip
    load = Load(target, convs, tag)
    await load.connect()
    pinger = asyncio.create_task(keep_alive(list(load.clients.values())))
    ready.set()
    while not go.is_set():
        await asyncio.sleep(0.01)
    # warm-up: a message in every conversation must complete (the bridge has subscribed, caches are
    # warm); sends made before the bridge subscribed are lost, so conversations still waiting get a new one
    pending = {conv: load.send(conv) for conv in load.convs}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        await load.drain(2)
        pending = {conv: load.send(conv) for conv, cmid in pending.items() if cmid in load.missing}
    if pending:
        out.put(("error", f"{tag}: warm-up messages never completed in {len(pending)} conversations"))
        return
    load.reset()
    results = []
    for index, (name, rate, seconds) in enumerate(phases):
        load.stats = stats = PhaseStats(name, rate or None, seconds)
        out.put(("mark", index, "start"))
        cpu_before = self_cpu_s()
        if rate:
            await load.open_loop(seconds, rate)
        else:
            await load.closed_loop(seconds, window)
        stats.generator_cpu_s = self_cpu_s() - cpu_before
        await load.drain(10)
        out.put(("mark", index, "drained"))
        stats.unacked = sum(ACK in missing for missing in load.missing.values())
        stats.undelivered = sum(len(missing - {ACK}) for missing in load.missing.values())
        results.append(asdict(stats))
        load.stats = None
        load.reset()
    pinger.cancel()
    for client in load.clients.values():
        client.disconnect()
    out.put(("ok", results))


def load_main(*args: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_load(*args))


# ---- one target ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def measure(target: Target, convs: list[Conversation], phases: list[tuple[str, float, float]],
            args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    go = ctx.Event()
    procs, readies = [], []
    per_proc = [convs[i :: args.procs] for i in range(args.procs)]
    proc_phases = [(name, rate / args.procs, seconds) for name, rate, seconds in phases]
    for i, mine in enumerate(per_proc):
        ready = ctx.Event()
        readies.append(ready)
        tag = f"p{i}.{time.time_ns():x}"  # client_msg_ids are never reused: a reuse is a duplicate, not delivered again
        proc = ctx.Process(target=load_main, args=(target, mine, tag, proc_phases, args.window // args.procs,
                                                    ready, go, out))  # fmt: skip
        proc.start()
        procs.append(proc)
    # server CPU at each phase's start (every load process has begun it) and once every process has
    # drained it (all its messages completed, or the drain gave up): the CPU of the messages of the phase
    marks: dict[tuple[int, str], int] = {}
    server_cpu: dict[tuple[int, str], dict[str, float]] = {}
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError(f"{target.name}: devices did not connect in 120 s")
        progress(f"{target.name}: {sum(len(c.members) for c in convs):,} devices connected; {machine_load()}")
        go.set()
        parts = []
        budget = 90 + sum(seconds + 10 for _, _, seconds in phases)
        deadline = time.monotonic() + budget
        while len(parts) < len(procs):
            status, *payload = out.get(timeout=max(1.0, deadline - time.monotonic()))
            if status == "mark":
                marks[tuple(payload)] = marks.get(tuple(payload), 0) + 1  # type: ignore[index]
                if marks[tuple(payload)] == len(procs):  # type: ignore[index]
                    server_cpu[tuple(payload)] = processes_cpu_s(target.pids)  # type: ignore[index]
            elif status == "ok":
                parts.append(payload[0])
            else:
                raise RuntimeError(payload[0])
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    rows = []
    load = os.getloadavg()[0]
    for index, (name, rate, seconds) in enumerate(phases):
        merged = [part[index] for part in parts]
        acks = [v for m in merged for v in m["ack_ms"]]
        delivers = [v for m in merged for v in m["deliver_ms"]]
        lags = [v for m in merged for v in m["lag_ms"]]
        sent = sum(m["sent"] for m in merged)
        complete = sum(m["complete"] for m in merged)
        generator_s = sum(m["generator_cpu_s"] for m in merged)
        # per message completed (in the phase or the drain): a server that falls behind is not
        # credited with the messages it never got to
        done = complete + sum(m["late"] for m in merged)
        before, after = server_cpu.get((index, "start"), {}), server_cpu.get((index, "drained"), {})
        server_ms = {n: 1000 * (after[n] - before[n]) / max(done, 1) for n in after if n in before}
        rows.append({
            "target": target.name, "phase": name, "offered": rate or None, "seconds": seconds, "sent": sent,
            "acked": sum(m["acked"] for m in merged), "complete": complete,
            "late": sum(m["late"] for m in merged), "incomplete": sent - complete - sum(m["late"] for m in merged),
            "duplicates": sum(m["duplicates"] for m in merged),
            "unacked": sum(m["unacked"] for m in merged), "undelivered": sum(m["undelivered"] for m in merged),
            "rejected": [c for m in merged for c in m["rejected"]],
            "rate": complete / seconds, "ack_p50": pct(acks, 0.5), "ack_p99": pct(acks, 0.99),
            "deliver_p50": pct(delivers, 0.5), "deliver_p99": pct(delivers, 0.99),
            "deliver_p999": pct(delivers, 0.999), "deliver_max": max(delivers, default=float("nan")),
            "lag_p99": pct(lags, 0.99),
            "cpu_ms_per_msg": server_ms, "server_cpu_ms_per_msg": sum(server_ms.values()) if server_ms else None,
            "generator_cpu_ms_per_msg": 1000 * generator_s / max(sent, 1),
            "generator_cores": generator_s / seconds, "load_average": load,
        })  # fmt: skip
        row = rows[-1]
        progress(f"{target.name}: {name}: {describe(row)}")
    return rows


def describe(row: dict[str, Any]) -> str:
    server = row["server_cpu_ms_per_msg"]
    parts = " + ".join(f"{n} {v:.3f}" for n, v in row["cpu_ms_per_msg"].items())
    return (f"{row['rate']:,.0f} msg/s complete in the phase ({row['late']} late, {row['incomplete']} incomplete:"
            f" {row['unacked']} unacked, {row['undelivered']} deliveries missing; {row['duplicates']} duplicates,"
            f" {len(row['rejected'])} rejected {sorted(set(row['rejected']))}); deliver p50 {row['deliver_p50']:.1f}"
            f" p99 {row['deliver_p99']:.1f} p99.9 {row['deliver_p999']:.1f} ms; generator lag p99"
            f" {row['lag_p99']:.1f} ms; server CPU {'-' if server is None else f'{server:.3f}'} ms/msg"
            f"{f' ({parts})' if parts else ''}; generator {row['generator_cpu_ms_per_msg']:.3f} ms/msg"
            f" ({row['generator_cores']:.2f} cores); load {row['load_average']:.1f}")  # fmt: skip


def start_target(name: str, work: Path, redis: LocalRedis, convs: list[Conversation], args: argparse.Namespace
                 ) -> Target:  # fmt: skip
    place = work / name
    place.mkdir()
    if name == "chatmq":
        target = start_chatmq(place, redis.url, convs, args.notifier, rate_limit=not args.no_rate_limit,
                              commit_delay_ms=args.commit_delay_ms)
        if redis.process is not None:
            target.pids["redis"] = redis.process.pid
    elif name == "chatmq-rabbitmq":
        target = start_chatmq_rabbitmq(place, redis.url, convs, rate_limit=not args.no_rate_limit)
        if redis.process is not None:
            target.pids["redis"] = redis.process.pid
    elif name == "naive":
        target = start_naive(place)
    else:
        target = start_relay(place)
    progress(f"{name}: started on port {target.port}")
    return target


def run_interleaved(targets: dict[str, Target], convs: list[Conversation], args: argparse.Namespace
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """Each phase on every target in turn, the order rotating from phase to phase."""
    phases = [("max", 0.0, args.max_seconds)] + [(f"{rate:g}/s", rate, args.seconds) for rate in args.rates]
    names = list(targets)
    stopped: set[str] = set()
    rows: list[dict[str, Any]] = []
    for index, phase in enumerate(phases):
        _, rate, _ = phase
        for name in names[index % len(names) :] + names[: index % len(names)]:
            if name in stopped:
                continue
            row = measure(targets[name], convs, [phase], args)[0]
            rows.append(row)
            # behind: messages left over, or completed only in the drain after the phase (queueing);
            # the ladder ends there (the closed loop's maximum is not used to skip rates: on a loaded
            # machine it says little about a steady rate below it)
            if rate and (row["incomplete"] + row["late"] > 0.01 * row["sent"] or row["rate"] < 0.9 * rate):
                progress(f"{name}: saturated at {rate:,.0f} msg/s")
                stopped.add(name)
    return rows


# ---- report --------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | phase | offered msg/s | complete msg/s | ack p50/p99 ms | deliver p50/p99/p99.9 ms "
             "| late / incomplete / dup | server CPU ms/msg | generator CPU ms/msg (cores) | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        offered = f"{r['offered']:,.0f}" if r["offered"] else "closed loop"
        server = r.get("server_cpu_ms_per_msg")
        lines.append(f"| {r['target']} | {r['phase']} | {offered} | {r['rate']:,.0f} | "
                     f"{r['ack_p50']:.1f} / {r['ack_p99']:.1f} | {r['deliver_p50']:.1f} / {r['deliver_p99']:.1f} / "
                     f"{r['deliver_p999']:.1f} | {r['late']} / {r['incomplete']} / {r['duplicates']} | "
                     f"{'-' if server is None else f'{server:.3f}'} | {r['generator_cpu_ms_per_msg']:.3f} "
                     f"({r['generator_cores']:.2f}) | {r['load_average']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def headline(rows: list[dict[str, Any]], rate: float = 2000) -> str | None:
    """Server CPU per durable chat message at a steady ``rate``: the figure the CPU target is judged on."""
    row = next((r for r in rows if r["target"] == "chatmq" and r["offered"] == rate), None)
    if row is None or row["server_cpu_ms_per_msg"] is None:
        return None
    parts = " + ".join(f"{n} {v:.3f}" for n, v in row["cpu_ms_per_msg"].items())
    return (f"server CPU per durable chat message at {rate:,.0f} msg/s: {row['server_cpu_ms_per_msg']:.3f} ms"
            f" ({parts}); target <= 0.25 ms; generator {row['generator_cpu_ms_per_msg']:.3f} ms/msg;"
            f" load average {row['load_average']:.1f}")  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        progress("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(r["target"] for r in rows):
        points = sorted((r["offered"], r["deliver_p50"], r["deliver_p99"]) for r in rows
                        if r["target"] == name and r["offered"])  # fmt: skip
        if not points:
            continue
        xs = [p[0] for p in points]
        line = ax.plot(xs, [p[2] for p in points], marker="o", label=f"{name} p99")[0]
        ax.plot(xs, [p[1] for p in points], marker=".", linestyle="--", color=line.get_color(), label=f"{name} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    offered = sorted({r["offered"] for r in rows if r["offered"]})
    ax.set_xticks(offered, [f"{x:,.0f}" for x in offered])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("offered load (messages/s)")
    ax.set_ylabel("send -> deliver latency (ms)")
    ax.set_title("chatmq end to end vs baselines (2 cores, same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    progress(f"plot written to {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated, from: " + ", ".join(TARGETS) + " (default: all but chatmq-rabbitmq)")
    parser.add_argument("--conversations", type=int, default=300, help="2-4 members each (default 300: 900 devices)")
    parser.add_argument("--rates", default="1000,2000,4000,8000", help="open-loop offered rates, msg/s")
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="length of each open-loop phase (default 60: WAL checkpoints fall inside)",
    )
    parser.add_argument("--max-seconds", type=float, default=20.0, help="length of the closed-loop phase")
    parser.add_argument("--window", type=int, default=400, help="unacknowledged messages in the closed loop")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--quick", action="store_true", help="fewer rates, 10-second phases")
    parser.add_argument(
        "--no-rate-limit",
        action="store_true",
        help="chatmq: turn the per-sender rate limiter off (on by default, at production settings)",
    )
    parser.add_argument(
        "--commit-delay-ms",
        type=float,
        default=0.0,
        help="chatmq: the bridge writer's group-commit window (CHATMQ_BRIDGE_COMMIT_DELAY_MS; default 0, as shipped)",
    )
    parser.add_argument(
        "--notifier",
        action="store_true",
        help="chatmq: also run the notifier, a webhook per message and push targets for every "
        "member, against a local sink (bench/sink.py)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--plot",
        type=Path,
        help="also draw latency against offered load into this PNG "
        "(docs/img/e2e-latency.png is the committed figure: redraw it on purpose)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.max_seconds, args.rates = 10.0, 8.0, "2000,4000"
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    convs = conversations(args.conversations)
    progress(f"{len(convs)} conversations, {sum(len(c.members) for c in convs)} devices; targets: "
             f"{', '.join(args.targets)} (interleaved); {machine_load()}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chatmq-e2e-") as tmp:
        work = Path(tmp)
        redis_server = LocalRedis(work / "redis", persist=False).start()
        targets: dict[str, Target] = {}
        try:
            for name in args.targets:
                targets[name] = start_target(name, work, redis_server, convs, args)
            rows = run_interleaved(targets, convs, args)
        finally:
            for target in targets.values():
                target.stop()
            redis_server.stop()
    print()
    print(table(rows))
    if (line := headline(rows)) is not None:
        print()
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
