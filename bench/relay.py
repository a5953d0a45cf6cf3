"""Broker relay benchmark: stock amqtt 0.12.1, chatmq's broker and Mosquitto, side by side in one run.

One paho publisher and one paho subscriber, each in its own process, relay 200-byte messages
through each broker (each broker in its own process) at QoS 0 and QoS 1; then the same again while
an idle client holds 10,000 distinct conversation filters (``chat/c{i}/msg``). The publisher keeps
at most ``--window`` messages in transit (sent but not yet received by the subscriber), so the
rate is the broker's relay capacity and the latency is relay latency, not a growing backlog.

The clients turn Nagle off (TCP_NODELAY), as chatmq's own bridge and client library do: paho leaves
it on, and then at QoS 0, where the broker sends nothing back to the publisher, a small write waits
for the broker's delayed ACK (40 ms on Linux): p99 about 43 ms for every broker, and rates that
swing by a factor of two from run to run. ``--nagle`` measures paho's default anyway.

Every broker is measured ``--rounds`` times, interleaved (round 1: each broker, round 2: each
broker, ...), so a slow minute of the machine hits all of them. Ratios are taken within a round
and the table shows their median and range.

Brokers:
  mosquitto    a private /usr/sbin/mosquitto on a free port, anonymous, no persistence, at its best
               settings: TCP_NODELAY and no in-flight cap (``max_inflight_messages 0``)
  amqtt        stock amqtt 0.12.1, anonymous-auth plugin only (amqtt's event/packet/$SYS plugins
               off: they are per-packet tasks that cost about a third of the throughput), on uvloop
               as chatmq's broker
  chatmq       ``python -m chatmq.broker`` configured as the product: password/token auth + ACL; the
               publisher is the bridge's service identity on ``chat/bench/msg``, the subscriber a
               member device, the idle client the service identity
  chatmq-anon  ``python -m chatmq.broker`` with --allow-anonymous, on ``bench/relay`` like the others
  rabbitmq     a private RabbitMQ node (bench/rabbitmq.py; Debian's 3.10 with its MQTT plugin), the
               clients log in as its default user; its CPU is the Erlang VM's (``beam.smp``)

    .venv/bin/python -m bench.relay            # about 4 minutes (3 rounds)
    .venv/bin/python -m bench.relay --quick    # about 1 minute
    .venv/bin/python -m bench.relay --brokers mosquitto,chatmq,rabbitmq   # RabbitMQ beside the others
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.cpu import machine_load, process_cpu_s, self_cpu_s
from bench.rabbitmq import PASSWORD as RABBIT_PASSWORD
from bench.rabbitmq import USER as RABBIT_USER
from bench.rabbitmq import RabbitCluster
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.netutil import disable_nagle, free_port, wait_for_port
from chatmq.core.store import open_store

REPO = Path(__file__).resolve().parents[1]
PAYLOAD_BYTES = 200
SECRET = "bench-relay-secret-key-0123456789abcdef0123456789"
DEVICE, DEVICE_PASSWORD = "benchdev", "bench-device-password"
_HEADER = struct.Struct("!QQ")  # seq, monotonic send time in ns (CLOCK_MONOTONIC is machine-wide)


@dataclass(frozen=True)
class Login:
    username: str | None = None
    password: str | None = None


@dataclass
class Target:
    """A running broker and how the benchmark clients talk to it."""

    name: str
    port: int
    topic: str
    publisher: Login = field(default_factory=Login)
    subscriber: Login = field(default_factory=Login)
    idle: Login = field(default_factory=Login)
    idle_filter: str = "chat/c{}/msg"  # an anonymous chatmq client may not use the chat namespace
    stop: Callable[[], None] = lambda: None
    pid: int | None = None  # the broker process, whose CPU time per relayed message is reported


@dataclass
class Result:
    broker: str
    scenario: str
    sent: int
    received: int
    rate: float
    p50_ms: float
    p99_ms: float
    broker_cpu_us: float | None = None  # broker CPU time (user+system) per message received
    round: int = 1
    generator_cpu_us: float = 0.0  # the publisher's and the subscriber's own CPU per message received


@dataclass
class Summary:
    """One broker and scenario over every round: the median rate and the per-round ratios."""

    broker: str
    scenario: str
    rates: list[float]
    median: Result  # the round with the median rate (its latency, counts and CPU are shown)
    vs_mosquitto: list[float]  # rate / Mosquitto's rate in the same round and scenario
    vs_one_filter: list[float]  # with idle filters: rate / this broker's 1-filter rate in the same round


def broker_cpu_s(pid: int | None) -> float:
    return 0.0 if pid is None else process_cpu_s(pid)


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


# ---- clients (each in its own process) -------------------------------------------------------


def _client(client_id: str, login: Login) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    if login.username is not None:
        client.username_pw_set(login.username, login.password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _connect(client: paho.Client, port: int, nagle: bool) -> None:
    if not nagle:  # as chatmq's bridge and client library do (chatmq.core.netutil.disable_nagle)
        client.on_socket_open = lambda _client, _userdata, sock: disable_nagle(sock)
    client.connect("127.0.0.1", port, keepalive=120)
    client.loop_start()
    deadline = time.monotonic() + 15
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not connect to 127.0.0.1:{port}")
        time.sleep(0.005)


def subscriber_main(
    port: int, login: Login, topic: str, qos: int, ready: Any, received: Synchronized, sent: Synchronized,
    warmup: int, stop_after: float, out: Any, nagle: bool,
) -> None:  # fmt: skip
    """Count and time every delivery; report the rate after ``warmup`` messages and the latencies."""
    latencies: list[int] = []
    marks: dict[str, int] = {}
    count = 0

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        nonlocal count
        now = time.monotonic_ns()
        seq, sent_ns = _HEADER.unpack_from(msg.payload)
        count += 1
        if seq == warmup:
            marks["start"] = now
        if seq >= warmup:
            latencies.append(now - sent_ns)
            marks["last"] = now
        received.value = count

    client = _client(f"bench-sub-{os.getpid()}", login)
    client.on_message = on_message
    acks: list[int] = []
    client.on_subscribe = lambda c, u, mid, codes, p: acks.extend(code.value for code in codes)
    _connect(client, port, nagle)
    client.subscribe(topic, qos)
    deadline = time.monotonic() + 10
    while not acks:
        if time.monotonic() > deadline:
            raise RuntimeError("no SUBACK")
        time.sleep(0.005)
    if acks[0] >= 0x80:
        raise RuntimeError(f"subscription to {topic} refused")
    ready.set()
    # Done when every message the publisher sent has arrived, or after the drain timeout.
    deadline = None
    while True:
        time.sleep(0.01)
        total = sent.value
        if total > 0 and count >= total:
            break
        if total > 0 and deadline is None:
            deadline = time.monotonic() + stop_after
        if deadline is not None and time.monotonic() > deadline:
            break
    client.disconnect()
    client.loop_stop()
    span = (marks.get("last", 0) - marks.get("start", 0)) / 1e9
    measured = len(latencies)
    rate = (measured - 1) / span if span > 0 and measured > 1 else 0.0
    latencies.sort()
    out.put((count, rate, _percentile(latencies, 50), _percentile(latencies, 99), self_cpu_s()))


def publisher_main(
    port: int, login: Login, topic: str, qos: int, start: Any, received: Synchronized, sent: Synchronized,
    messages: int, seconds: float, window: int, nagle: bool, cpu: Synchronized,
) -> None:  # fmt: skip
    """Publish until ``messages`` or ``seconds``, never more than ``window`` ahead of the subscriber."""
    client = _client(f"bench-pub-{os.getpid()}", login)
    _connect(client, port, nagle)
    start.wait(30)
    padding = b"x" * (PAYLOAD_BYTES - _HEADER.size)
    deadline = time.monotonic() + seconds
    seq = 0
    while seq < messages and time.monotonic() < deadline:
        if seq - received.value >= window:
            time.sleep(0.0001)
            continue
        client.publish(topic, _HEADER.pack(seq, time.monotonic_ns()) + padding, qos=qos)
        seq += 1
    sent.value = seq
    time.sleep(0.5)  # let paho flush its last packets (and QoS 1 acks) before leaving
    client.disconnect()
    client.loop_stop()
    cpu.value = self_cpu_s()


def idle_main(port: int, login: Login, pattern: str, filters: int, ready: Any, stop: Any) -> None:
    """Hold ``filters`` distinct conversation filters and do nothing else."""
    client = _client(f"bench-idle-{os.getpid()}", login)
    acked: list[int] = []
    client.on_subscribe = lambda c, u, mid, codes, p: acked.extend(code.value for code in codes)
    _connect(client, port, nagle=False)
    chunk = 200
    for first in range(0, filters, chunk):
        client.subscribe([(pattern.format(i), 0) for i in range(first, min(filters, first + chunk))])
    deadline = time.monotonic() + 120
    while len(acked) < filters:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(acked)}/{filters} SUBACKs")
        time.sleep(0.01)
    refused = sum(code >= 0x80 for code in acked)
    if refused:
        raise RuntimeError(f"{refused} of the idle filters were refused")
    ready.set()
    stop.wait(3600)
    client.disconnect()
    client.loop_stop()


def _percentile(sorted_ns: list[int], pct: float) -> float:
    if not sorted_ns:
        return float("nan")
    index = min(len(sorted_ns) - 1, round(pct / 100 * (len(sorted_ns) - 1)))
    return sorted_ns[index] / 1e6


# ---- one measurement -------------------------------------------------------------------------


def measure(target: Target, qos: int, args: argparse.Namespace) -> tuple[int, int, float, float, float, float]:
    """(sent, received, rate, p50 ms, p99 ms, the two clients' CPU seconds)."""
    ctx = mp.get_context("fork")
    ready, out = ctx.Event(), ctx.Queue()
    received, sent = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    publisher_cpu = ctx.Value("d", 0.0, lock=False)
    warmup = args.warmup
    sub = ctx.Process(
        target=subscriber_main,
        args=(target.port, target.subscriber, target.topic, qos, ready, received, sent, warmup, args.drain, out,
              args.nagle),
    )
    sub.start()
    pub = ctx.Process(
        target=publisher_main,
        args=(target.port, target.publisher, target.topic, qos, ready, received, sent,
              args.messages + warmup, args.seconds, args.window, args.nagle, publisher_cpu),
    )  # fmt: skip
    pub.start()
    try:
        count, rate, p50, p99, subscriber_cpu = out.get(timeout=args.seconds + args.drain + 60)
    finally:
        for proc in (pub, sub):
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return sent.value, count, rate, p50, p99, subscriber_cpu + publisher_cpu.value


@contextlib.contextmanager
def idle_client(target: Target, filters: int) -> Iterator[None]:
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=idle_main, args=(target.port, target.idle, target.idle_filter, filters, ready, stop))
    proc.start()
    began = time.monotonic()
    while not ready.wait(0.5):
        if not proc.is_alive():
            raise RuntimeError(f"the idle client failed on {target.name}")
        if time.monotonic() - began > 180:
            proc.kill()
            raise RuntimeError(f"the idle client could not subscribe on {target.name}")
    progress(f"{target.name}: idle client holds {filters:,} filters ({time.monotonic() - began:.1f} s to subscribe)")
    try:
        yield
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# ---- brokers ---------------------------------------------------------------------------------


def popen(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)


def stopper(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    return stop


def wait_started(name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    if not wait_for_port("127.0.0.1", port, 30) or proc.poll() is not None:
        stopper(proc)()
        raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-2000:]}")


def start_mosquitto(work: Path) -> Target:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = work / "mosquitto.conf"
    # Its best settings: no Nagle delay on small packets (as asyncio, so chatmq, does) and no cap on
    # QoS 1 messages in flight per client (the default, 20, throttles a fast subscriber; chatmq has none).
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n"
                    "set_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 0\n")  # fmt: skip
    log = work / "mosquitto.log"
    proc = popen([binary, "-c", str(conf)], log)
    wait_started("mosquitto", proc, port, log)
    return Target("mosquitto", port, "bench/relay", stop=stopper(proc), pid=proc.pid)


_AMQTT_MAIN = textwrap.dedent(
    """
    import asyncio, sys
    from amqtt.broker import Broker
    try:
        import uvloop  # the event loop chatmq's broker runs on (chatmq/broker/server.py)
        uvloop.install()
    except ImportError:
        pass

    async def main(port):
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(main(int(sys.argv[1])))
    """
)


def start_amqtt(work: Path) -> Target:
    port = free_port()
    log = work / "amqtt.log"
    proc = popen([sys.executable, "-c", _AMQTT_MAIN, str(port)], log)
    wait_started("amqtt", proc, port, log)
    return Target("amqtt", port, "bench/relay", stop=stopper(proc), pid=proc.pid)


def prepare_store(work: Path) -> str:
    """A SQLite store with a device user in conversation ``bench``; the service identity needs none."""
    url = "sqlite:///" + str(work / "chatmq.db")
    store = open_store(url)
    try:
        store.create_user(DEVICE, hash_password(DEVICE_PASSWORD))
        store.create_conversation("bench", [DEVICE])
    finally:
        store.close()
    return url


def start_chatmq(work: Path, redis_url: str, store_url: str, *, anonymous: bool) -> Target:
    name = "chatmq-anon" if anonymous else "chatmq"
    port, ws_port = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))  # a fresh one per round
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATMQ_")}
    env.update(
        CHATMQ_DATA_DIR=str(data),
        CHATMQ_STORE_URL=store_url,
        CHATMQ_REDIS_URL=redis_url,
        CHATMQ_SECRET_KEY=SECRET,
        CHATMQ_HOST="127.0.0.1",
        CHATMQ_MQTT_PORT=str(port),
        CHATMQ_WS_PORT=str(ws_port),
        CHATMQ_LOG_LEVEL="WARNING",
        CHATMQ_ALLOW_ANONYMOUS="true" if anonymous else "false",
    )
    log = work / f"{name}.log"
    proc = popen([sys.executable, "-m", "chatmq.broker"], log, env)
    wait_started(name, proc, port, log)
    if anonymous:
        return Target(name, port, "bench/relay", idle_filter="bench/c{}/msg", stop=stopper(proc), pid=proc.pid)
    service = Login(SERVICE_USER, issue_token(SECRET, SERVICE_USER, 24 * 3600, service=True).token)
    return Target(
        name, port, "chat/bench/msg", publisher=service, subscriber=Login(DEVICE, DEVICE_PASSWORD),
        idle=service, stop=stopper(proc), pid=proc.pid,
    )  # fmt: skip


def start_rabbitmq() -> Target:
    cluster = RabbitCluster(size=1, plugins=("rabbitmq_mqtt",)).start()
    node = cluster.nodes[0]
    login = Login(RABBIT_USER, RABBIT_PASSWORD)
    return Target("rabbitmq", node.mqtt_port, "bench/relay", publisher=login, subscriber=login, idle=login,
                  idle_filter="bench/c{}/msg", stop=cluster.stop, pid=node.vm_pid)


# ---- the run ---------------------------------------------------------------------------------

BROKERS = ("mosquitto", "amqtt", "chatmq", "chatmq-anon", "rabbitmq")
DEFAULT_BROKERS = BROKERS[:4]  # RabbitMQ (about 20 s to boot a node per round) only when asked for


def run_broker(target: Target, args: argparse.Namespace, round_no: int) -> list[Result]:
    results: list[Result] = []

    def one(scenario: str, qos: int) -> None:
        progress(f"{target.name}: {scenario} ...")
        cpu_before = broker_cpu_s(target.pid)
        sent, received, rate, p50, p99, clients_cpu = measure(target, qos, args)
        cpu_us = 1e6 * (broker_cpu_s(target.pid) - cpu_before) / max(received, 1) if target.pid else None
        generator_us = 1e6 * clients_cpu / max(received, 1)
        results.append(Result(target.name, scenario, sent, received, rate, p50, p99, cpu_us, round_no, generator_us))
        progress(
            f"{target.name}: {scenario}: {rate:,.0f} msg/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms"
            f"  ({received:,}/{sent:,} received)" + (f"  broker CPU {cpu_us:.0f} us/msg" if cpu_us else "")
            + f"  clients' CPU {generator_us:.0f} us/msg; {machine_load()}"
        )

    for qos in (0, 1):
        one(f"QoS {qos}, 1 filter", qos)
    with idle_client(target, args.filters):
        for qos in (0, 1):
            one(f"QoS {qos}, +{args.filters:,} idle filters", qos)
    return results


def _one_filter(scenario: str) -> str:
    return scenario.split(",")[0] + ", 1 filter"


def summarize(results: list[Result]) -> list[Summary]:
    rate = {(r.round, r.broker, r.scenario): r.rate for r in results}
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.broker, r.scenario), []).append(r)
    summaries = []
    for (broker, scenario), runs in groups.items():
        ranked = sorted(runs, key=lambda r: r.rate)
        vs_mosq = [r.rate / m for r in runs if (m := rate.get((r.round, "mosquitto", scenario)))]
        vs_one = [
            r.rate / o for r in runs if "idle" in scenario and (o := rate.get((r.round, broker, _one_filter(scenario))))
        ]
        median = ranked[(len(ranked) - 1) // 2]
        summaries.append(Summary(broker, scenario, [r.rate for r in runs], median, vs_mosq, vs_one))
    return summaries


def _ratio(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.0%}"
    return f"{statistics.median(values):.0%} ({min(values):.0%}-{max(values):.0%})"


def table(summaries: list[Summary]) -> str:
    """Median over the rounds; ratios are taken within each round (same run), then their median (range)."""
    lines = [
        "| broker | scenario | msg/s | p50 ms | p99 ms | received/sent | vs mosquitto | vs 1 filter | CPU µs/msg "
        "| clients' CPU µs/msg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for summary in summaries:
        r = summary.median
        spread = f" ({min(summary.rates):,.0f}-{max(summary.rates):,.0f})" if len(summary.rates) > 1 else ""
        rates = f"{r.rate:,.0f}{spread}"
        lines.append(
            f"| {r.broker} | {r.scenario} | {rates} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.received:,}/{r.sent:,} | {_ratio(summary.vs_mosquitto)} | {_ratio(summary.vs_one_filter)} "
            f"| {'' if r.broker_cpu_us is None else f'{r.broker_cpu_us:.0f}'} | {r.generator_cpu_us:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short measurements (about a minute in all)")
    parser.add_argument("--brokers", default=",".join(DEFAULT_BROKERS),
                        help=f"comma-separated subset of {BROKERS} (default: all but rabbitmq)")
    parser.add_argument("--messages", type=int, default=None, help="measured messages per run (after warmup)")
    parser.add_argument("--seconds", type=float, default=None, help="longest publishing time per run")
    parser.add_argument("--window", type=int, default=100, help="most messages in transit at once")
    parser.add_argument("--filters", type=int, default=10_000, help="filters held by the idle client")
    parser.add_argument("--drain", type=float, default=5.0, help="wait this long for stragglers")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measure every broker this many times, interleaved (default 3, --quick 1)")
    parser.add_argument("--nagle", action="store_true",
                        help="leave Nagle on in the paho clients (paho's default; QoS 0 then stalls on delayed ACKs)")
    parser.add_argument("--json", type=Path, help="also write the results here (for bench/run.py)")
    args = parser.parse_args(argv)
    args.messages = args.messages or (5_000 if args.quick else 30_000)
    args.seconds = args.seconds or (4.0 if args.quick else 12.0)
    args.warmup = 300 if args.quick else 1_000
    args.rounds = args.rounds or (1 if args.quick else 3)
    unknown = set(args.brokers.split(",")) - set(BROKERS)
    if unknown:
        parser.error(f"unknown brokers: {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the brokers and Redis started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wanted = args.brokers.split(",")
    progress(
        f"relay benchmark: {PAYLOAD_BYTES}-byte payloads, window {args.window}, up to {args.messages:,} messages"
        f" or {args.seconds:.0f} s per run, {args.rounds} round(s), Nagle {'on' if args.nagle else 'off'} in the"
        f" clients; {machine_load()}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="chatmq-relay-") as tmp:
        work = Path(tmp)
        redis = (
            LocalRedis(work / "redis", persist=False).start() if any(b.startswith("chatmq") for b in wanted) else None
        )
        try:
            store_url = prepare_store(work) if redis is not None else ""
            starters: dict[str, Callable[[], Target]] = {
                "mosquitto": lambda: start_mosquitto(work),
                "amqtt": lambda: start_amqtt(work),
                "chatmq": lambda: start_chatmq(work, redis.url, store_url, anonymous=False),  # type: ignore[union-attr]
                "chatmq-anon": lambda: start_chatmq(work, redis.url, store_url, anonymous=True),  # type: ignore[union-attr]
                "rabbitmq": start_rabbitmq,
            }
            for round_no in range(1, args.rounds + 1):
                if args.rounds > 1:
                    progress(f"round {round_no} of {args.rounds}")
                for name in wanted:
                    target = starters[name]()
                    progress(f"{name}: started on port {target.port}")
                    try:
                        results.extend(run_broker(target, args, round_no))
                    finally:
                        target.stop()
        finally:
            if redis is not None:
                redis.stop()
    summaries = summarize(results)
    print()
    print(table(summaries))
    if args.json:
        args.json.write_text(json.dumps({"summary": [asdict(x) for x in summaries],
                                         "results": [asdict(r) for r in results]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
