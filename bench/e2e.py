"""End-to-end benchmark: messages persisted and delivered per second, send->ack and send->deliver latency.

Starts a real `chatmq up` (SQLite store, private Redis) on ephemeral ports, then runs W worker
processes; each owns one two-member conversation, a sender and a receiver device, and sends N
messages with at most WINDOW unacknowledged. Every message is durable before its ack.

    .venv/bin/python bench/e2e.py --workers 4 --messages 2000 --window 64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from chatcore.auth import hash_password
from chatcore.netutil import free_port, wait_for_port
from chatcore.protocol import TopicKind
from chatcore.store import open_store
from chatmq.localredis import LocalRedis
from clients import ChatClient

PASSWORD = "bench-password"


def worker(index: int, port: int, messages: int, window: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    conv = f"bench{index}"
    sender = ChatClient("127.0.0.1", port, f"s{index}", PASSWORD, device="d").connect()
    receiver = ChatClient("127.0.0.1", port, f"r{index}", PASSWORD, device="d").connect()
    receiver.join(conv)
    sent_at: dict[str, int] = {}
    ack_lat: list[float] = []
    deliver_lat: list[float] = []
    slots = threading.Semaphore(window)
    received = threading.Event()

    def drain() -> None:
        count = 0
        while count < messages:
            event = receiver.next_event(60)
            if event.kind is TopicKind.MSG:
                deliver_lat.append((time.time_ns() - sent_at[event.payload["client_msg_id"]]) / 1e6)
                count += 1
        received.set()

    threading.Thread(target=drain, daemon=True).start()
    start = time.perf_counter()
    for i in range(messages):
        slots.acquire()
        cmid = f"{index}-{i}"
        sent_at[cmid] = time.time_ns()
        future = sender.send(conv, "x" * 200, client_msg_id=cmid)

        def done(f, cmid: str = cmid) -> None:  # type: ignore[no-untyped-def]
            ack_lat.append((time.time_ns() - sent_at[cmid]) / 1e6)
            slots.release()

        future.add_done_callback(done)
    for _ in range(window):
        slots.acquire()
    acked_at = time.perf_counter()
    received.wait(120)
    delivered_at = time.perf_counter()
    sender.close()
    receiver.close()
    out.put((acked_at - start, delivered_at - start, ack_lat, deliver_lat))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000, help="messages per worker")
    parser.add_argument("--window", type=int, default=64, help="max unacknowledged sends per worker")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chatmq-bench-") as tmp:
        data = Path(tmp) / "data"
        redis_server = LocalRedis(Path(tmp) / "redis", persist=False).start()
        store = open_store(f"sqlite:///{data / 'chatmq.db'}")
        pw = hash_password(PASSWORD)
        for i in range(args.workers):
            store.create_user(f"s{i}", pw)
            store.create_user(f"r{i}", pw)
            store.create_conversation(f"bench{i}", [f"s{i}", f"r{i}"])
        store.close()
        mqtt, ws, http = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env["CHATMQ_LOG_LEVEL"] = "WARNING"
        env["CHATMQ_MESSAGES_PER_S"] = "0"  # a benchmark sender is meant to exceed a person's send rate
        up = subprocess.Popen(
            [sys.executable, "-m", "chatmq.cli", "up", "--data-dir", str(data), "--mqtt-port", str(mqtt),
             "--ws-port", str(ws), "--http-port", str(http), "--redis-url", redis_server.url], env=env,
        )  # fmt: skip
        try:
            assert wait_for_port("127.0.0.1", http, 60), "stack did not start"
            time.sleep(1.0)  # let the bridge subscribe
            print(f"stack up; {args.workers} workers x {args.messages} messages, window {args.window}", flush=True)
            out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            procs = [mp.Process(target=worker, args=(i, mqtt, args.messages, args.window, out))
                     for i in range(args.workers)]
            for p in procs:
                p.start()
            results = [out.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(30)
            redis_server.stop()

    total = args.workers * args.messages
    ack_time = max(r[0] for r in results)
    deliver_time = max(r[1] for r in results)
    acks = [v for r in results for v in r[2]]
    delivers = [v for r in results for v in r[3]]
    print(f"messages:            {total} ({args.workers} conversations)")
    print(f"persisted+acked:     {total / ack_time:,.0f} msg/s")
    print(f"delivered:           {total / deliver_time:,.0f} msg/s")
    print(f"send->ack     ms:    p50 {pct(acks, 0.5):.1f}  p99 {pct(acks, 0.99):.1f}")
    print(f"send->deliver ms:    p50 {pct(delivers, 0.5):.1f}  p99 {pct(delivers, 0.99):.1f}")
    print(f"mean deliver ms:     {statistics.fmean(delivers):.1f}")


if __name__ == "__main__":
    main()
