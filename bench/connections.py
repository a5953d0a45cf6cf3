"""Connections benchmark: 10,000 idle authenticated devices on one broker, then a reconnect storm.

One chatmq broker process (``python -m chatmq.broker``, product configuration: token/password auth, ACL,
persistent sessions in a private Redis, a temporary SQLite store) on free ports. Devices are
provisioned in bulk through the store API (10,000 users, each in 2 four-member conversations) and
log in with API tokens (chatmq.core.auth). The load generator is ``bench/leanmqtt.py`` (one asyncio
Protocol per connection, no task per connection) spread over ``--procs`` processes; each device
subscribes to ``chat/{conv}/msg`` of its 2 conversations and ``user/{self}/events`` at QoS 1 with a
persistent session (clean_session=0), then idles with a 60 s keepalive.

Measured, in order:
  1. connect: time for all devices to connect and subscribe (at most --concurrency in flight);
  2. memory: broker RSS before and after, per connection = delta / devices (target <= 30 KiB);
  3. idle CPU: broker CPU% over --idle-seconds with everyone connected (keepalive pings only);
  4. latency: the service identity publishes QoS 1 messages to random conversations at --rate/s;
     every member device timestamps its delivery (p50/p99 over all deliveries);
  5. reconnect storm: SIGTERM the broker, start it again on the same Redis (sessions restored), all
     devices reconnect at once (retrying every 0.2-1 s while the port is closed) and a probe is
     published to every conversation as soon as the broker listens; done when every device is
     connected AND has received a probe (queued for it if it was not back yet). Target: 30 s;
  6. password logins (for comparison): --password-devices devices disconnect and log in again at
     once with their password (argon2) instead of a token, twice: cold (every check hashes) and
     warm (the broker's verified-credential cache); the cold rate is projected to all devices.

    .venv/bin/python -m bench.connections --quick          # 2,000 devices, about a minute
    .venv/bin/python -m bench.connections                  # 10,000 devices, about 3-5 minutes
    .venv/bin/python -m bench.connections --json out.json  # also write the results as JSON
    .venv/bin/python -m bench.connections --devices 50000 --hold-only   # hold 50,000: memory, idle CPU
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench.cpu import machine_load, process_cpu_s
from bench.leanmqtt import LeanClient, MqttRefused, keep_alive
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import open_store

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-connections-secret-key-0123456789abcdef0123456789"
DEVICE_PASSWORD = "bench-device-password"
CONV_SIZE = 4
_MAGIC = b"CMQB"
_PROBE = struct.Struct("!4scQQ")  # magic, kind (L latency, P probe), seq, CLOCK_MONOTONIC send time (ns)
_PADDING = b"x" * 150  # ~200-byte messages, like the other benchmarks


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


FD_WANTED = 131_072  # 50,000 devices: the broker holds 50,000 sockets, the usual hard limit is 20,000
# One source address gives at most the ephemeral port range (~28,000) connections to one port:
# beyond PER_SOURCE devices the load processes connect from 127.0.0.2, 127.0.0.3, ...
PER_SOURCE = 20_000


def raise_fd_limit() -> int:
    """RLIMIT_NOFILE up to FD_WANTED (raising the hard limit needs root; else up to the hard limit):
    10,000 sockets do not fit in the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FD_WANTED:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (FD_WANTED, FD_WANTED))
            soft, hard = FD_WANTED, FD_WANTED
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class DeviceSpec:
    client_id: str
    user: str
    token: str
    filters: tuple[str, ...]
    source: str | None = None  # the local address to connect from (None: the kernel's choice)


# ---- provisioning ------------------------------------------------------------------------------


def layout(devices: int) -> tuple[list[str], dict[str, list[str]]]:
    """Users d00000...; conversation a{k} holds 4 consecutive users, b{k} 4 users a quarter apart,
    so every user is in exactly 2 conversations and they overlap like real groups do."""
    users = [f"d{i:05d}" for i in range(devices)]
    convs: dict[str, list[str]] = {}
    groups = devices // CONV_SIZE
    for k in range(groups):
        convs[f"a{k}"] = users[k * CONV_SIZE : (k + 1) * CONV_SIZE]
        convs[f"b{k}"] = [users[k + j * groups] for j in range(CONV_SIZE)]
    return users, convs


def provision(store_url: str, users: list[str], convs: dict[str, list[str]]) -> None:
    """Through the store API, one argon2 hash shared by all (each check still costs a full verify)."""
    password_hash = hash_password(DEVICE_PASSWORD)
    store = open_store(store_url)
    try:
        for user in users:
            store.create_user(user, password_hash)
        for conv, members in convs.items():
            store.create_conversation(conv, members)
    finally:
        store.close()


def device_specs(users: list[str], convs: dict[str, list[str]]) -> list[DeviceSpec]:
    member_of: dict[str, list[str]] = collections.defaultdict(list)
    for conv, members in convs.items():
        for user in members:
            member_of[user].append(conv)
    ttl = 24 * 3600
    spread = len(users) > PER_SOURCE
    return [
        DeviceSpec(f"dev-{user}", user, issue_token(SECRET, user, ttl).token,
                   (*(f"chat/{conv}/msg" for conv in member_of[user]), f"user/{user}/events"),
                   f"127.0.0.{2 + i // PER_SOURCE}" if spread else None)
        for i, user in enumerate(users)
    ]  # fmt: skip


# ---- the broker ----------------------------------------------------------------------------------


class BrokerProcess:
    def __init__(self, work: Path, redis_url: str, store_url: str) -> None:
        self.port, self.ws_port = free_port(), free_port()
        self.log = work / "broker.log"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("CHATMQ_")}
        self.env.update(
            CHATMQ_DATA_DIR=str(work / "broker"), CHATMQ_STORE_URL=store_url, CHATMQ_REDIS_URL=redis_url,
            CHATMQ_SECRET_KEY=SECRET, CHATMQ_HOST="127.0.0.1", CHATMQ_MQTT_PORT=str(self.port),
            CHATMQ_WS_PORT=str(self.ws_port), CHATMQ_LOG_LEVEL="WARNING",
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatmq.broker"], cwd=REPO, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                preexec_fn=raise_fd_limit,  # the broker holds a socket per device
            )  # fmt: skip

    def wait_listening(self, timeout: float = 60.0) -> None:
        if not wait_for_port("127.0.0.1", self.port, timeout) or self.proc is None or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"the broker did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    @property
    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def terminate(self, timeout: float = 60.0) -> float:
        """SIGTERM and wait; returns how long the broker took to shut down."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def listen_overflows() -> int:
    """TcpExt ListenOverflows (machine-wide): SYNs dropped because a listen backlog was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=False)).get("ListenOverflows", 0))
    return 0


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """Broker CPU (user + system, all threads) over ``seconds``, as % of one core."""
    before, began = process.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, span = process.cpu_times(), time.monotonic() - began
    return 100.0 * ((after.user - before.user) + (after.system - before.system)) / span


# ---- load generator processes ----------------------------------------------------------------------


class Fleet:
    """The devices of one load generator process, and the commands the orchestrator sends it."""

    def __init__(self, port: int, specs: list[DeviceSpec], keepalive: int) -> None:
        self.port = port
        self.specs = specs
        self.clients = [LeanClient(s.client_id, s.user, s.token, keepalive, self._on_message) for s in specs]
        self.index = {client: i for i, client in enumerate(self.clients)}
        self.latencies: list[int] = []
        self.probed: dict[int, int] = {}  # device index -> first probe's arrival (monotonic ns)

    def _on_message(self, client: LeanClient, topic: str, payload: bytes) -> None:
        if not payload.startswith(_MAGIC):
            return
        _, kind, _, sent_ns = _PROBE.unpack_from(payload)
        now = time.monotonic_ns()
        if kind == b"L":
            self.latencies.append(now - sent_ns)
        else:
            self.probed.setdefault(self.index[client], now)

    async def _connect_one(self, i: int, *, gate: asyncio.Semaphore | None, deadline: float) -> tuple[str, int]:
        """Connect (retrying while the broker is not there), subscribe unless the session was kept."""
        client = self.clients[i]
        while time.monotonic() < deadline:
            try:
                async with gate if gate is not None else contextlib.nullcontext():
                    present = await client.connect("127.0.0.1", self.port, clean=False, source=self.specs[i].source)
                    connected = time.monotonic_ns()
                    if not present:
                        codes = await client.subscribe([(topic, 1) for topic in self.specs[i].filters])
                        if any(code >= 0x80 for code in codes):
                            return "subscription refused", connected
                    return ("resumed" if present else "subscribed"), connected
            except MqttRefused as exc:
                return f"refused {exc.code}", 0
            except (OSError, TimeoutError):
                client.close()
                await asyncio.sleep(random.uniform(0.2, 1.0))
        return "timed out", 0

    async def connect(self, arg: dict[str, Any]) -> dict[str, Any]:
        count = arg.get("count") or len(self.clients)
        if "password" in arg:
            for client in self.clients[:count]:
                client.password = arg["password"]
        concurrency = arg.get("concurrency")
        gate = asyncio.Semaphore(concurrency) if concurrency else None
        deadline = time.monotonic() + arg["timeout"]
        outcomes = await asyncio.gather(*(self._connect_one(i, gate=gate, deadline=deadline) for i in range(count)))
        return {
            "outcomes": dict(collections.Counter(outcome for outcome, _ in outcomes)),
            "connected_ns": [at for _, at in outcomes if at],
        }

    async def drop(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Wait until the first ``count`` devices lost their connections (closing them if asked)."""
        chosen = self.clients[: arg.get("count") or len(self.clients)]
        if arg.get("close"):
            for client in chosen:
                client.disconnect()
        pending = [client.lost for client in chosen if client.lost is not None and not client.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=arg["timeout"])
        return {"still_connected": sum(client.connected for client in chosen)}

    async def wait_probes(self, arg: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + arg["timeout"]
        while len(self.probed) < len(self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"probed_ns": list(self.probed.values())}

    def reset(self, _: dict[str, Any]) -> dict[str, Any]:
        self.latencies.clear()
        self.probed.clear()
        return {}

    def take_latencies(self, _: dict[str, Any]) -> dict[str, Any]:
        taken, self.latencies = self.latencies, []
        return {"latencies_ns": taken}


class Publisher:
    """The service identity (what the bridge logs in as), publishing timestamped messages."""

    def __init__(self, port: int) -> None:
        self.port = port
        token = issue_token(SECRET, SERVICE_USER, 24 * 3600, service=True).token
        self.client = LeanClient("bench-publisher", SERVICE_USER, token, 60)

    async def _ensure_connected(self, deadline: float) -> None:
        while not self.client.connected:
            try:
                await self.client.connect("127.0.0.1", self.port, clean=True)
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def latency(self, arg: dict[str, Any]) -> dict[str, Any]:
        """QoS 1 at a steady ``rate`` to random conversations for ``seconds``."""
        await self._ensure_connected(time.monotonic() + 30)
        topics, interval = arg["topics"], 1.0 / arg["rate"]
        acks: list[asyncio.Future[None]] = []
        began = time.monotonic()
        seq = 0
        while (elapsed := time.monotonic() - began) < arg["seconds"]:
            if seq * interval > elapsed:
                await asyncio.sleep(seq * interval - elapsed)
            payload = _PROBE.pack(_MAGIC, b"L", seq, time.monotonic_ns()) + _PADDING
            acked = self.client.publish_nowait(random.choice(topics), payload, 1)
            assert acked is not None
            acks.append(acked)
            seq += 1
        done, _ = await asyncio.wait(acks, timeout=30)
        return {"sent": seq, "acked": sum(1 for f in done if f.exception() is None)}

    async def probe(self, arg: dict[str, Any]) -> dict[str, Any]:
        """As soon as the broker listens: one QoS 1 probe per topic, at most ``window`` unacknowledged."""
        await self._ensure_connected(time.monotonic() + arg["timeout"])
        connected = time.monotonic_ns()
        window = asyncio.Semaphore(arg.get("window", 200))
        acks: list[asyncio.Future[None]] = []
        for seq, topic in enumerate(arg["topics"]):
            await window.acquire()
            acked = self.client.publish_nowait(topic, _PROBE.pack(_MAGIC, b"P", seq, time.monotonic_ns()), 1)
            assert acked is not None
            acked.add_done_callback(lambda _f: window.release())
            acks.append(acked)
        done, _ = await asyncio.wait(acks, timeout=arg["timeout"])
        return {"connected_ns": connected, "sent": len(acks), "acked": sum(1 for f in done if f.exception() is None),
                "finished_ns": time.monotonic_ns()}  # fmt: skip


def worker_main(conn: Connection, port: int, specs: list[DeviceSpec], keepalive: int) -> None:
    """A load generator process: runs commands ``(name, arg)`` from the orchestrator, replies a dict."""
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve_commands(conn, port, specs, keepalive))


async def _serve_commands(conn: Connection, port: int, specs: list[DeviceSpec], keepalive: int) -> None:
    loop = asyncio.get_running_loop()
    fleet = Fleet(port, specs, keepalive)
    publisher = Publisher(port) if not specs else None
    pinger = asyncio.create_task(keep_alive(fleet.clients + ([publisher.client] if publisher else [])))
    commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def read_commands() -> None:
        """A blocking reader thread: loop.add_reader would make the pipe non-blocking (uvloop does),
        and a command bigger than the pipe buffer (the storm's topic list) then fails half read."""
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                command = ("exit", {})
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command[0] == "exit":
                return

    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    handlers: dict[str, Any] = {
        "connect": fleet.connect, "drop": fleet.drop, "wait_probes": fleet.wait_probes, "reset": fleet.reset,
        "latencies": fleet.take_latencies,
    }  # fmt: skip
    if publisher is not None:
        handlers.update(latency=publisher.latency, probe=publisher.probe)
    while True:
        name, arg = await commands.get()
        if name == "exit":
            break
        try:
            result = handlers[name](arg)
            if asyncio.iscoroutine(result):
                result = await result
            conn.send(("ok", result))
        except Exception as exc:  # reported to the orchestrator, which stops the run
            conn.send(("error", repr(exc)))
    pinger.cancel()
    for client in fleet.clients:
        client.disconnect()
    if publisher is not None:
        publisher.client.disconnect()
    await asyncio.sleep(0.2)


class Worker:
    def __init__(self, port: int, specs: list[DeviceSpec], keepalive: int) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, port, specs, keepalive), daemon=True)
        self.proc.start()

    def send(self, name: str, arg: dict[str, Any] | None = None) -> None:
        self.conn.send((name, arg or {}))

    def result(self, timeout: float) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"load generator {self.proc.pid} did not answer within {timeout:.0f} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"load generator {self.proc.pid} failed: {value}")
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.send("exit")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def ask_all(
    workers: list[Worker], name: str, arg: dict[str, Any] | None = None, timeout: float = 300
) -> list[dict[str, Any]]:
    for worker in workers:
        worker.send(name, arg)
    return [worker.result(timeout) for worker in workers]


def merged_outcomes(replies: list[dict[str, Any]]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for reply in replies:
        total.update(reply["outcomes"])
    return dict(total)


def percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))] / 1e6


# ---- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"devices": args.devices, "procs": args.procs, "keepalive_s": args.keepalive,
                               "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="chatmq-connections-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        redis = LocalRedis(work / "redis", persist=False).start()
        broker = BrokerProcess(work, redis.url, "sqlite:///" + str(work / "chatmq.db"))
        workers: list[Worker] = []
        try:
            began = time.monotonic()
            users, convs = layout(args.devices)
            provision("sqlite:///" + str(work / "chatmq.db"), users, convs)
            specs = device_specs(users, convs)
            progress(f"provisioned {len(users):,} users in {len(convs):,} conversations, tokens issued "
                     f"({time.monotonic() - began:.1f} s)")  # fmt: skip
            broker.spawn()
            broker.wait_listening()
            time.sleep(1.0)
            results["rss_idle_mib"] = broker.rss() / 2**20
            progress(f"broker pid {broker.proc.pid if broker.proc else '?'} on port {broker.port}: "
                     f"RSS {results['rss_idle_mib']:.1f} MiB with no clients")  # fmt: skip
            per = -(-len(specs) // args.procs)
            workers = [Worker(broker.port, specs[i : i + per], args.keepalive) for i in range(0, len(specs), per)]
            publisher = Worker(broker.port, [], 60)
            all_procs = [*workers, publisher]
            topics = [f"chat/{conv}/msg" for conv in convs]

            def generator_cpu_s() -> float:  # the load processes' own CPU: whose limit was it?
                return sum(process_cpu_s(worker.proc.pid) for worker in all_procs if worker.proc.pid)

            # 1. connect everyone
            began, generator_before = time.monotonic(), generator_cpu_s()
            replies = ask_all(workers, "connect", {"concurrency": args.concurrency, "timeout": 600}, timeout=660)
            took = time.monotonic() - began
            results["connect_generator_cpu_s"] = generator_cpu_s() - generator_before
            outcomes = merged_outcomes(replies)
            connected = sum(n for outcome, n in outcomes.items() if outcome in ("subscribed", "resumed"))
            results.update(connect_s=took, connected=connected, connect_outcomes=outcomes)
            progress(f"{connected:,}/{args.devices:,} devices connected and subscribed in {took:.1f} s "
                     f"({connected / took:,.0f}/s, {args.concurrency} in flight per process): {outcomes}")  # fmt: skip
            if connected < args.devices:
                raise RuntimeError(f"only {connected} of {args.devices} devices connected: {outcomes}")

            # 2. memory, 3. idle CPU
            time.sleep(3.0)
            rss = broker.rss()
            results["rss_connected_mib"] = rss / 2**20
            results["kib_per_connection"] = (rss / 2**20 - results["rss_idle_mib"]) * 1024 / connected
            progress(f"broker RSS {results['rss_connected_mib']:.1f} MiB with {connected:,} connections: "
                     f"{results['kib_per_connection']:.1f} KiB per connection")  # fmt: skip
            generator_before = generator_cpu_s()
            results["idle_cpu_percent"] = cpu_percent(broker.process, args.idle_seconds)
            results["idle_generator_cpu_percent"] = 100 * (generator_cpu_s() - generator_before) / args.idle_seconds
            progress(f"broker CPU at idle: {results['idle_cpu_percent']:.1f}% of one core over "
                     f"{args.idle_seconds:.0f} s (load generator {results['idle_generator_cpu_percent']:.1f}%); "
                     f"{machine_load()}")  # fmt: skip
            if args.hold_only:
                return results

            # 4. delivery latency while everyone is connected
            ask_all(workers, "reset")
            publisher.send("latency", {"rate": args.rate, "seconds": args.latency_seconds, "topics": topics})
            sent = publisher.result(args.latency_seconds + 60)
            time.sleep(1.0)
            latencies = sorted(x for reply in ask_all(workers, "latencies") for x in reply["latencies_ns"])
            results.update(
                latency_sent=sent["sent"], latency_acked=sent["acked"], latency_deliveries=len(latencies),
                latency_expected=sent["sent"] * CONV_SIZE, latency_p50_ms=percentile(latencies, 50),
                latency_p99_ms=percentile(latencies, 99), latency_max_ms=percentile(latencies, 100),
            )  # fmt: skip
            progress(f"latency at {args.rate:.0f} msg/s x {CONV_SIZE} members: {len(latencies):,}/"
                     f"{sent['sent'] * CONV_SIZE:,} deliveries, p50 {results['latency_p50_ms']:.2f} ms, "
                     f"p99 {results['latency_p99_ms']:.2f} ms, max {results['latency_max_ms']:.1f} ms")  # fmt: skip

            # 5. reconnect storm
            results["shutdown_s"] = broker.terminate()
            progress(f"broker stopped by SIGTERM in {results['shutdown_s']:.1f} s; waiting for every device to notice")
            ask_all(all_procs, "drop", {"timeout": 60})
            ask_all(workers, "reset")
            overflows = listen_overflows()
            generator_before = generator_cpu_s()
            t0 = time.monotonic_ns()
            broker.spawn()
            for worker in workers:
                worker.send("connect", {"timeout": args.storm_timeout})  # everyone at once, no gate
            publisher.send("probe", {"topics": topics, "timeout": args.storm_timeout})
            broker.wait_listening(args.storm_timeout)
            listening_s = (time.monotonic_ns() - t0) / 1e9
            replies = [worker.result(args.storm_timeout + 30) for worker in workers]
            probe = publisher.result(args.storm_timeout + 30)
            probed = ask_all(workers, "wait_probes", {"timeout": args.storm_timeout}, timeout=args.storm_timeout + 30)
            connected_at = sorted(ns for reply in replies for ns in reply["connected_ns"])
            probed_at = sorted(ns for reply in probed for ns in reply["probed_ns"])
            outcomes = merged_outcomes(replies)
            results.update(
                storm_listening_s=listening_s, storm_outcomes=outcomes, storm_connected=len(connected_at),
                storm_all_connected_s=(connected_at[-1] - t0) / 1e9 if connected_at else None,
                storm_p50_connected_s=(connected_at[len(connected_at) // 2] - t0) / 1e9 if connected_at else None,
                storm_probed=len(probed_at),
                storm_all_receiving_s=(probed_at[-1] - t0) / 1e9 if len(probed_at) == args.devices else None,
                storm_probes_done_s=(probe["finished_ns"] - t0) / 1e9, storm_probes_acked=probe["acked"],
                rss_after_storm_mib=broker.rss() / 2**20, storm_listen_overflows=listen_overflows() - overflows,
                storm_broker_cpu_s=sum(broker.process.cpu_times()[:2]),  # since its start: restore + reconnects
                storm_generator_cpu_s=generator_cpu_s() - generator_before, storm_load_average=os.getloadavg()[0],
            )  # fmt: skip
            progress(f"storm: broker listening {listening_s:.1f} s after start; {len(connected_at):,} reconnected "
                     f"(last at {results['storm_all_connected_s']} s, {outcomes}); {len(probed_at):,} received a "
                     f"probe (last at {results['storm_all_receiving_s']} s); probes acked "
                     f"{probe['acked']:,}/{probe['sent']:,}; SYNs dropped on a full backlog: "
                     f"{results['storm_listen_overflows']}")  # fmt: skip

            # 6. password logins, cold then warm (no restart in between: the cache lives in the broker)
            if args.password_devices:
                results.update(password_logins(workers, args))
        finally:
            for worker in workers + ([publisher] if "publisher" in locals() else []):
                worker.stop()
            broker.kill()
            redis.stop()
    results["loadavg_end"] = os.getloadavg()[0]
    return results


def password_logins(workers: list[Worker], args: argparse.Namespace) -> dict[str, Any]:
    count = -(-args.password_devices // len(workers))
    out: dict[str, Any] = {"password_devices": count * len(workers)}
    for phase in ("cold", "warm"):
        ask_all(workers, "drop", {"count": count, "close": True, "timeout": 30})
        began = time.monotonic()
        login = {"count": count, "password": DEVICE_PASSWORD, "timeout": args.storm_timeout}
        replies = ask_all(workers, "connect", login, timeout=args.storm_timeout + 30)
        took = time.monotonic() - began
        outcomes = merged_outcomes(replies)
        ok = sum(n for outcome, n in outcomes.items() if outcome in ("subscribed", "resumed"))
        out[f"password_{phase}_s"] = took
        out[f"password_{phase}_ok"] = ok
        out[f"password_{phase}_per_s"] = ok / took
        progress(f"password logins ({phase}): {ok:,}/{count * len(workers):,} in {took:.1f} s "
                 f"({ok / took:,.0f}/s): {outcomes}")  # fmt: skip
    out["password_cold_projected_s"] = args.devices / out["password_cold_per_s"] if out["password_cold_per_s"] else None
    return out


def table(r: dict[str, Any]) -> str:
    def num(key: str, fmt: str = "{:.1f}") -> str:
        value = r.get(key)
        return fmt.format(value) if isinstance(value, int | float) else "n/a"

    rows = [
        ("devices connected (tokens, 3 subscriptions each)", f"{r['connected']:,}/{r['devices']:,}", ""),
        ("connect + subscribe, all devices", num("connect_s") + " s", ""),
        ("load generator CPU: connecting / idle / storm", f"{num('connect_generator_cpu_s')} s / "
         f"{num('idle_generator_cpu_percent')} % of a core / {num('storm_generator_cpu_s')} s", ""),
        ("broker RSS, no clients / all connected", f"{num('rss_idle_mib')} / {num('rss_connected_mib')} MiB", ""),
        ("broker memory per connection", num("kib_per_connection") + " KiB", "<= 12 KiB at 10,000"),
        (f"broker CPU at idle (keepalive {r['keepalive_s']} s)", num("idle_cpu_percent") + " % of a core", ""),
        ("delivery latency p50 / p99", f"{num('latency_p50_ms', '{:.2f}')} / {num('latency_p99_ms', '{:.2f}')} ms", ""),
        ("deliveries received / expected", f"{r.get('latency_deliveries', 0):,}/{r.get('latency_expected', 0):,}", ""),
        ("broker shutdown (SIGTERM)", num("shutdown_s") + " s", ""),
        ("storm: broker start -> listening", num("storm_listening_s") + " s", ""),
        ("storm: start -> half reconnected", num("storm_p50_connected_s") + " s", ""),
        ("storm: start -> all reconnected", num("storm_all_connected_s") + " s", ""),
        ("storm: broker CPU from start to all reconnected (restore + CONNECTs)", num("storm_broker_cpu_s") + " s", ""),
        ("storm: SYNs dropped on a full listen backlog", f"{r.get('storm_listen_overflows', 0):,}", ""),
        ("storm: start -> all reconnected and receiving", num("storm_all_receiving_s") + " s", "<= 10 s"),
        (
            "storm: devices reconnected / got a probe",
            f"{r.get('storm_connected', 0):,} / {r.get('storm_probed', 0):,}",
            "",
        ),
    ]
    if "password_devices" in r:
        rows += [
            (f"password logins at once ({r['password_devices']:,}), cold", f"{num('password_cold_s')} s "
             f"({num('password_cold_per_s', '{:.0f}')}/s)", ""),
            (f"password logins at once ({r['password_devices']:,}), cached", f"{num('password_warm_s')} s "
             f"({num('password_warm_per_s', '{:.0f}')}/s)", ""),
            (f"cold password storm projected to {r['devices']:,}",
             num("password_cold_projected_s", "{:.0f}") + " s", ""),
        ]  # fmt: skip
    lines = ["| measure | value | target |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 devices, shorter phases (about a minute)")
    parser.add_argument("--devices", type=int, default=None, help="device connections (default 10,000)")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--keepalive", type=int, default=60, help="MQTT keepalive of the devices (s)")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight per process (setup)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle CPU window")
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s for the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=None, help="length of the latency phase")
    parser.add_argument("--storm-timeout", type=float, default=120.0, help="give up on the storm after this")
    parser.add_argument("--password-devices", type=int, default=None,
                        help="devices that log in with a password for the comparison (0 = skip)")  # fmt: skip
    parser.add_argument("--hold-only", action="store_true",
                        help="connect, then measure memory and idle CPU only (no latency, no storm): "
                             "for holding --devices 50000")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep (broker.log, store)")
    args = parser.parse_args(argv)
    args.devices = args.devices or (2_000 if args.quick else 10_000)
    args.devices -= args.devices % CONV_SIZE
    if args.devices < CONV_SIZE * 2:
        parser.error(f"--devices must be at least {CONV_SIZE * 2}")
    args.idle_seconds = args.idle_seconds or (10.0 if args.quick else 20.0)
    args.latency_seconds = args.latency_seconds or (10.0 if args.quick else 20.0)
    if args.password_devices is None:
        args.password_devices = 40 if args.quick else 100
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the broker, Redis, workers
    limit = raise_fd_limit()
    if limit < args.devices + 200:  # the broker holds a descriptor per device (and a few of its own)
        sys.exit(f"RLIMIT_NOFILE is {limit} and cannot be raised here (the hard limit; raising it needs root with "
                 f"CAP_SYS_RESOURCE): too low for one broker holding {args.devices:,} devices")
    progress(f"connections benchmark: {args.devices:,} devices over {args.procs} load processes, "
             f"{machine_load()}, fd limit {limit}")  # fmt: skip
    results = run(args)
    print()
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"benchmark": "connections", "quick": args.quick, **results}, indent=2))
        progress(f"results written to {args.json}")


if __name__ == "__main__":
    main()
