"""End-to-end benchmark: durable, acked and delivered chat messages per second, and their latency.

Devices (one MQTT connection each, lean asyncio clients from bench/leanmqtt.py) are the members
of many 2-, 3- and 4-member conversations; a random member of a random conversation sends a
200-byte message. Three targets run one after the other in the same run, on the same load:

  chatmq     the product: ``python -m broker`` + ``python -m bridge`` on SQLite and a private Redis.
             A message counts when the server's ack (user/{u}/ack: stored, seq assigned) reached the
             sender and the stored message (chat/{conv}/msg) reached every other member.
  naive      stock amqtt 0.12.1 + bench/naive_bridge.py (one INSERT+commit per message, then publish
             and wait for the PUBACKs): the same contract without batching or the broker fixes.
  mosquitto  the Mosquitto on this machine relaying the sends straight to the members, nothing
             stored: the ceiling (the ack is Mosquitto's PUBACK).

Phases per target: ``max`` (closed loop: each load process keeps --window messages unacknowledged;
the sustained rate), then open-loop offered rates (--rates) to show latency against load; a
rate the target cannot keep up with ends its ladder (saturated). Latencies are send->ack and
send->deliver (to each other member). Prints a table, writes --json and a plot (--plot).

    .venv/bin/python -m bench.e2e                  # about 4 minutes
    .venv/bin/python -m bench.e2e --quick          # about 1.5 minutes
    .venv/bin/python -m bench.e2e --targets chatmq --rates 1000,5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.leanmqtt import LeanClient, keep_alive
from bench.relay import popen, progress, start_amqtt, start_mosquitto, stopper, wait_started
from chatcore.auth import hash_password, issue_token
from chatcore.netutil import free_port
from chatcore.store import open_store
from chatcore.store.base import PushTarget, Webhook
from chatmq.localredis import LocalRedis

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-e2e-secret-key-0123456789abcdef0123456789abcdef"
BODY = "x" * 200
TARGETS = ("chatmq", "naive", "mosquitto")


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


def start_chatmq(work: Path, redis_url: str, convs: list[Conversation], notifier: bool = False) -> Target:
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
        CHATMQ_MESSAGES_PER_S="0",  # a benchmark device sends far faster than a person
    )  # fmt: skip
    target = Target("chatmq", port, chat=True)
    broker = popen([sys.executable, "-m", "broker"], work / "broker.log", env)
    target.stops.append(stopper(broker))
    wait_started("chatmq broker", broker, port, work / "broker.log")
    bridge = popen([sys.executable, "-m", "bridge"], work / "bridge.log", env)
    target.stops.append(stopper(bridge))
    target.pids = {"broker": broker.pid, "bridge": bridge.pid}
    if notifier:  # push and webhooks running beside: a webhook per message, notifications collapsed
        sink = popen([sys.executable, "-m", "bench.sink", "--port", str(sink_port)], work / "sink.log", env)
        target.stops.append(stopper(sink))
        env = {**env, "CHATMQ_PUSH_GATEWAY_URL": f"http://127.0.0.1:{sink_port}/notify"}
        notify = popen([sys.executable, "-m", "chatmq.cli", "notifier"], work / "notifier.log", env)
        target.stops.insert(0, stopper(notify))
        target.pids["notifier"] = notify.pid
    target.passwords = {m: issue_token(SECRET, m, 24 * 3600).token for c in convs for m in c.members}
    return target


def start_naive(work: Path) -> Target:
    broker = start_amqtt(work)
    target = Target("naive", broker.port, chat=True, stops=[broker.stop])
    log = work / "naive-bridge.log"
    bridge = popen([sys.executable, "-m", "bench.naive_bridge", "--port", str(broker.port),
                    "--db", str(work / "naive.db")], log)  # fmt: skip
    target.stops.append(stopper(bridge))
    return target


def start_relay(work: Path) -> Target:
    broker = start_mosquitto(work)
    return Target("mosquitto", broker.port, chat=False, stops=[broker.stop])


# ---- the load (one or more processes) ------------------------------------------------------------


@dataclass
class PhaseStats:
    phase: str
    offered: float | None
    seconds: float
    sent: int = 0
    acked: int = 0
    complete: int = 0  # acked and delivered to every other member
    ack_ms: list[float] = field(default_factory=list)
    deliver_ms: list[float] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # error codes of rejected acks
    unacked: int = 0  # of the incomplete: never acked (the rest lack deliveries)


class Load:
    """Every device of this process's conversations, the send schedule and the bookkeeping."""

    def __init__(self, target: Target, convs: list[Conversation], tag: str) -> None:
        self.target, self.convs, self.tag = target, convs, tag
        self.clients: dict[str, LeanClient] = {}
        self.sent_at: dict[str, int] = {}
        self.waiting: dict[str, int] = {}  # client_msg_id -> deliveries + ack still missing
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

    def send(self, conv: Conversation | None = None) -> str:
        conv = conv or random.choice(self.convs)
        sender = random.choice(conv.members)
        self.counter += 1
        cmid = f"{self.tag}-{self.counter}"
        payload = orjson.dumps({"client_msg_id": cmid, "body": BODY})
        self.sent_at[cmid] = time.monotonic_ns()
        self.waiting[cmid] = len(conv.members)  # the other members' deliveries + the ack
        self.inflight += 1
        if self.stats is not None:
            self.stats.sent += 1
        acked = self.clients[sender].publish_nowait(f"chat/{conv.name}/send/{sender}", payload, qos=1)
        if not self.target.chat and acked is not None:
            acked.add_done_callback(lambda f, cmid=cmid: None if f.exception() else self.on_ack(cmid))
        return cmid

    def on_message(self, client: LeanClient, topic: str, payload: bytes) -> None:
        if self.target.chat and topic.startswith("user/"):
            ack = orjson.loads(payload)
            if ack["status"] != "received" and self.stats is not None:
                self.stats.rejected.append(ack["error"]["code"])
            self.on_ack(ack["client_msg_id"])
            return
        message = orjson.loads(payload)
        sender = message["sender"] if self.target.chat else topic.rsplit("/", 1)[1]
        if sender == client.username:
            return
        cmid = message["client_msg_id"]
        sent = self.sent_at.get(cmid)
        if sent is None:
            return
        if self.stats is not None:
            self.stats.deliver_ms.append((time.monotonic_ns() - sent) / 1e6)
        self._progress(cmid)

    def on_ack(self, cmid: str) -> None:
        sent = self.sent_at.get(cmid)
        if sent is None:
            return
        self.inflight -= 1
        self.freed.set()
        if self.stats is not None:
            self.stats.acked += 1
            self.stats.ack_ms.append((time.monotonic_ns() - sent) / 1e6)
        self._progress(cmid)

    def _progress(self, cmid: str) -> None:
        left = self.waiting.get(cmid, 0) - 1
        if left > 0:
            self.waiting[cmid] = left
            return
        self.waiting.pop(cmid, None)
        self.sent_at.pop(cmid, None)
        if self.stats is not None:
            self.stats.complete += 1

    async def closed_loop(self, seconds: float, window: int) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while self.inflight < window:
                self.send()
            self.freed.clear()
            try:
                await asyncio.wait_for(self.freed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break

    async def open_loop(self, seconds: float, rate: float) -> None:
        start = time.monotonic()
        done = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) - done
            for _ in range(due):
                self.send()
            done += max(due, 0)
            await asyncio.sleep(0.002)

    async def drain(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


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
        pending = {conv: load.send(conv) for conv, cmid in pending.items() if cmid in load.waiting}
    if pending:
        out.put(("error", f"{tag}: warm-up messages never completed in {len(pending)} conversations"))
        return
    load.waiting.clear()
    load.sent_at.clear()
    load.inflight = 0
    results = []
    for name, rate, seconds in phases:
        load.stats = PhaseStats(name, rate or None, seconds)
        if rate:
            await load.open_loop(seconds, rate)
        else:
            await load.closed_loop(seconds, window)
        await load.drain(10)
        load.stats.unacked = load.inflight
        results.append(asdict(load.stats))
        load.stats = None
        load.waiting.clear()
        load.sent_at.clear()
        load.inflight = 0
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


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU time of each process (from /proc: no dependency for a benchmark)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / ticks
    return out


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
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError(f"{target.name}: devices did not connect in 120 s")
        progress(f"{target.name}: {sum(len(c.members) for c in convs):,} devices connected; running")
        cpu_before = cpu_seconds(target.pids)
        go.set()
        parts = []
        budget = 90 + sum(seconds + 10 for _, _, seconds in phases)
        for _ in procs:
            status, payload = out.get(timeout=budget)
            if status != "ok":
                raise RuntimeError(payload)
            parts.append(payload)
        cpu = {name: after - cpu_before[name] for name, after in cpu_seconds(target.pids).items()}
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    rows = []
    for index, (name, rate, seconds) in enumerate(phases):
        merged = [part[index] for part in parts]
        acks = [v for m in merged for v in m["ack_ms"]]
        delivers = [v for m in merged for v in m["deliver_ms"]]
        sent = sum(m["sent"] for m in merged)
        complete = sum(m["complete"] for m in merged)
        rows.append({
            "target": target.name, "phase": name, "offered": rate or None, "seconds": seconds, "sent": sent,
            "acked": sum(m["acked"] for m in merged), "complete": complete, "incomplete": sent - complete,
            "unacked": sum(m["unacked"] for m in merged), "rejected": [c for m in merged for c in m["rejected"]],
            "rate": complete / seconds, "ack_p50": pct(acks, 0.5), "ack_p99": pct(acks, 0.99),
            "deliver_p50": pct(delivers, 0.5), "deliver_p99": pct(delivers, 0.99),
        })  # fmt: skip
        row = rows[-1]
        if len(phases) == 1:  # CPU seconds of the whole measurement (warm-up and drain included)
            total = sent + len(convs)
            row["cpu_ms_per_msg"] = {name: 1000 * seconds / max(total, 1) for name, seconds in cpu.items()}
        progress(f"{target.name}: {name}: {row['rate']:,.0f} msg/s complete, deliver p50 {row['deliver_p50']:.1f} ms"
                 f" p99 {row['deliver_p99']:.1f} ms, {row['incomplete']} incomplete ({row['unacked']} unacked,"
                 f" {len(row['rejected'])} rejected: {sorted(set(row['rejected']))})"
                 + "".join(f"; {n} {v:.2f} ms CPU/msg" for n, v in row.get("cpu_ms_per_msg", {}).items()))  # fmt: skip
    return rows


def run_target(name: str, work: Path, redis_url: str, convs: list[Conversation], args: argparse.Namespace
               ) -> list[dict[str, Any]]:  # fmt: skip
    place = work / name
    place.mkdir()
    target = {"chatmq": lambda: start_chatmq(place, redis_url, convs, args.notifier),
              "naive": lambda: start_naive(place), "mosquitto": lambda: start_relay(place)}[name]()  # fmt: skip
    progress(f"{name}: started on port {target.port}")
    try:
        rows = measure(target, convs, [("max", 0.0, args.seconds)], args)
        ceiling = rows[0]["rate"]
        for rate in args.rates:
            if rate > 1.5 * ceiling:  # far beyond what it sustains: the ladder ends here
                progress(f"{name}: skipping {rate:,.0f} msg/s (sustains {ceiling:,.0f})")
                continue
            row = measure(target, convs, [(f"{rate:g}/s", rate, args.seconds)], args)[0]
            rows.append(row)
            # behind: messages left over, or completed only in the drain after the phase (queueing)
            if row["incomplete"] > 0.01 * row["sent"] or row["rate"] < 0.9 * rate or row["deliver_p50"] > 1000:
                progress(f"{name}: saturated at {rate:,.0f} msg/s")
                break
        return rows
    finally:
        target.stop()


# ---- report --------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | phase | offered msg/s | complete msg/s | ack p50/p99 ms | deliver p50/p99 ms | incomplete |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        offered = f"{r['offered']:,.0f}" if r["offered"] else "closed loop"
        lines.append(f"| {r['target']} | {r['phase']} | {offered} | {r['rate']:,.0f} | "
                     f"{r['ack_p50']:.1f} / {r['ack_p99']:.1f} | {r['deliver_p50']:.1f} / {r['deliver_p99']:.1f} | "
                     f"{r['incomplete']} |")  # fmt: skip
    return "\n".join(lines)


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
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, from: " + ", ".join(TARGETS))
    parser.add_argument("--conversations", type=int, default=300, help="2-4 members each (default 300: 900 devices)")
    parser.add_argument("--rates", default="250,500,1000,2000,4000,8000", help="open-loop offered rates, msg/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--window", type=int, default=400, help="unacknowledged messages in the closed loop")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--quick", action="store_true", help="fewer rates, shorter phases")
    parser.add_argument("--notifier", action="store_true",
                        help="chatmq: also run the notifier, a webhook per message and push targets for every "
                             "member, against a local sink (bench/sink.py)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "e2e-latency.png", help="PNG to write")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no plot")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rates, args.conversations = 4.0, "500,1000,2000,4000", 150
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    convs = conversations(args.conversations)
    progress(f"{len(convs)} conversations, {sum(len(c.members) for c in convs)} devices; targets: "
             f"{', '.join(args.targets)}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chatmq-e2e-") as tmp:
        work = Path(tmp)
        redis_server = LocalRedis(work / "redis", persist=False).start()
        try:
            for name in args.targets:
                rows += run_target(name, work, redis_server.url, convs, args)
        finally:
            redis_server.stop()
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
