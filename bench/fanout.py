"""Cost of one message to a 1,000-member conversation, fan-out on write vs fan-out on read.

Starts a real `chatmq up` (SQLite, private Redis) per mode, connects MEMBERS subscribers to
`chat/{conv}/msg` (tokens as passwords, so connecting costs no password hashing), then sends
MESSAGES messages one at a time, each waiting until every subscriber got it (or a timeout, for
QoS 0 notices). Reported per message: broker and bridge CPU time (psutil, per child process of
`chatmq up`), send->ack and send->last member's delivery wall time (p50 and p99 over the
messages), deliveries received, and the load generator's own CPU (the receiver processes and this
one) with the machine's load average.

    .venv/bin/python -m bench.fanout                      # 1,000 members, 50 messages per mode
    .venv/bin/python -m bench.fanout --quick --json out.json

Mode is chosen by CHATMQ_FANOUT_READ_THRESHOLD: above the member count for "write", the default
(200) for "read". The benchmark process itself shares the machine's cores with the stack.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.cpu import machine_load, process_cpu_s, self_cpu_s
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import open_store

CONV = "townhall"
RECEIVER_PROCESSES = 8  # one process holding 1,000 paho clients (1,000 threads) cannot keep up itself


def _receive(port: int, users: list[str], secret: str, ready: mp.Queue, deliveries: mp.Queue, stop: Any) -> None:
    """A receiver process: connect its share of members, then report (seq, arrival time) per delivery."""
    subscribed = threading.Semaphore(0)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        deliveries.put((json.loads(msg.payload)["seq"], time.time()))

    clients = []
    for user in users:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{user}")
        client.username_pw_set(user, issue_token(secret, user, 3600).token)
        client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(f"chat/{CONV}/msg", 1)
        client.on_subscribe = lambda *_a: subscribed.release()
        client.on_message = on_message
        client.connect("127.0.0.1", port, keepalive=120)
        client.loop_start()
        clients.append(client)
    ready.put(sum(subscribed.acquire(timeout=120) for _ in users))
    stop.wait()
    for client in clients:
        client.disconnect()
        client.loop_stop()


class Receivers:
    """MEMBERS paho subscribers spread over RECEIVER_PROCESSES processes."""

    def __init__(self, port: int, users: list[str], secret: str) -> None:
        self.deliveries: mp.Queue = mp.Queue()
        self.stop = mp.Event()
        ready: mp.Queue = mp.Queue()
        self.procs = [
            mp.Process(target=_receive, args=(port, users[i::RECEIVER_PROCESSES], secret, ready, self.deliveries,
                                              self.stop), daemon=True)
            for i in range(RECEIVER_PROCESSES)
        ]
        for proc in self.procs:
            proc.start()
        connected = sum(ready.get(timeout=180) for _ in self.procs)
        assert connected == len(users), f"only {connected} of {len(users)} subscribers connected"
        self.counts: dict[int, int] = {}
        self.last: dict[int, float] = {}

    def wait(self, seq: int, expected: int, timeout: float) -> tuple[int, float]:
        """Deliveries of ``seq`` and the wall-clock time of the last one, once all arrived or at the timeout."""
        deadline = time.monotonic() + timeout
        while self.counts.get(seq, 0) < expected and (left := deadline - time.monotonic()) > 0:
            try:
                got, at = self.deliveries.get(timeout=left)
            except queue.Empty:
                break
            self.counts[got] = self.counts.get(got, 0) + 1
            self.last[got] = max(self.last.get(got, 0.0), at)
        return self.counts.get(seq, 0), self.last.get(seq, 0.0)

    def cpu_s(self) -> float:
        """The receiver processes' own CPU (the load generator's share of the cores)."""
        return sum(process_cpu_s(proc.pid) for proc in self.procs if proc.pid)

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(30)


def children(up: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(up.pid).children(recursive=True):
        line = " ".join(child.cmdline())
        for role in ("broker", "bridge", "api"):
            if f" {role}" in line and role not in found:
                found[role] = child
    return found


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    total = times.user + times.system
    for child in proc.children(recursive=True):  # the API's workers etc.
        t = child.cpu_times()
        total += t.user + t.system
    return total


def pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def run_mode(mode: str, members: int, messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chatmq-fanout-") as tmp:
        data = Path(tmp) / "data"
        redis_server = LocalRedis(Path(tmp) / "redis", persist=False).start()
        store = open_store(f"sqlite:///{data / 'chatmq.db'}")
        digest = hash_password("unused-bench-password")
        users = [f"m{i:04d}" for i in range(members)]
        for user in users:
            store.create_user(user, digest)
        store.create_conversation(CONV, users)
        store.close()
        secret = Settings(data_dir=data).load_secret()
        mqtt_port, ws, http = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env["CHATMQ_LOG_LEVEL"] = "ERROR"
        env["CHATMQ_FANOUT_READ_THRESHOLD"] = str(members + 1 if mode == "write" else min(200, members - 1))
        up = subprocess.Popen(
            [sys.executable, "-m", "chatmq.cli", "up", "--data-dir", str(data), "--mqtt-port", str(mqtt_port),
             "--ws-port", str(ws), "--http-port", str(http), "--redis-url", redis_server.url], env=env,
        )  # fmt: skip
        receivers: Receivers | None = None
        sender: mqtt.Client | None = None
        try:
            assert wait_for_port("127.0.0.1", http, 60), "stack did not start"
            time.sleep(1.0)
            receivers = Receivers(mqtt_port, users, secret)
            acks: dict[str, float] = {}
            acked = threading.Event()

            def on_ack(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
                acks[json.loads(msg.payload)["client_msg_id"]] = time.time()
                acked.set()

            sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sender")
            sender.username_pw_set(users[0], issue_token(secret, users[0], 3600).token)
            sender.on_message = on_ack
            sender.connect("127.0.0.1", mqtt_port, keepalive=120)
            sender.loop_start()
            sender.subscribe(f"user/{users[0]}/ack", 1)
            time.sleep(0.5)
            procs = children(up)
            warm = 2
            ack_ms, deliver_ms, got = [], [], []
            before: dict[str, float] = {}
            generator_before = 0.0
            for i in range(messages + warm):
                if i == warm:
                    before = {role: cpu(p) for role, p in procs.items()}
                    generator_before = receivers.cpu_s() + self_cpu_s()
                acked.clear()
                start = time.time()
                body = json.dumps({"client_msg_id": f"c{i}", "body": "x" * 200}).encode()
                sender.publish(f"chat/{CONV}/send/{users[0]}", body, qos=1)
                assert acked.wait(30), "no ack"
                count, last = receivers.wait(i + 1, members, timeout=10 if mode == "write" else 3)
                if i >= warm:
                    ack_ms.append((acks[f"c{i}"] - start) * 1000)
                    deliver_ms.append((last - start) * 1000)
                    got.append(count)
            after = {role: cpu(p) for role, p in procs.items()}
            generator_ms = (receivers.cpu_s() + self_cpu_s() - generator_before) * 1000 / messages
            result = {f"{role}_cpu_ms": (after[role] - before[role]) * 1000 / messages for role in procs}
            ack_ms.sort()
            deliver_ms.sort()
            result.update(
                mode=mode, members=members, messages=messages,
                ack_p50_ms=pct(ack_ms, 0.5), ack_p99_ms=pct(ack_ms, 0.99),
                last_delivery_p50_ms=pct(deliver_ms, 0.5), last_delivery_p99_ms=pct(deliver_ms, 0.99),
                deliveries=statistics.mean(got), deliveries_min=min(got),
                generator_cpu_ms_per_msg=generator_ms, load_average=os.getloadavg()[0],
            )  # fmt: skip
            return result
        finally:
            if receivers:
                receivers.close()
            if sender is not None:
                sender.disconnect()
                sender.loop_stop()
            up.send_signal(signal.SIGTERM)
            up.wait(60)
            redis_server.stop()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=None, help="messages per mode [50; quick 15]")
    parser.add_argument("--modes", default="write,read")
    parser.add_argument("--quick", action="store_true", help="fewer messages")
    parser.add_argument("--json", type=Path, help="write the results here (for bench/run.py)")
    args = parser.parse_args(argv)
    args.messages = args.messages or (15 if args.quick else 50)
    print(f"{args.members} members, {args.messages} messages per mode, one at a time; {machine_load()}", flush=True)
    results = []
    for mode in args.modes.split(","):
        r = run_mode(mode, args.members, args.messages)
        results.append(r)
        cpu_cols = "  ".join(f"{k}={v:.1f}" for k, v in r.items() if k.endswith("_cpu_ms"))
        print(
            f"fan-out on {mode:5s}: {cpu_cols} (per message)  send->ack p50/p99 {r['ack_p50_ms']:.1f}/"
            f"{r['ack_p99_ms']:.1f} ms  send->last member p50/p99 {r['last_delivery_p50_ms']:.1f}/"
            f"{r['last_delivery_p99_ms']:.1f} ms  deliveries {r['deliveries']:.0f}/{args.members} (min "
            f"{r['deliveries_min']})  generator {r['generator_cpu_ms_per_msg']:.1f} ms/msg"
            f"  load {r['load_average']:.1f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
