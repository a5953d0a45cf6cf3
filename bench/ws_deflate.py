"""permessage-deflate on the broker's WebSocket listener: bytes saved against CPU and memory spent.

For each setting (off, on; interleaved over ROUNDS rounds, the order alternating) a real `chatmq up`
(SQLite, private Redis) with CHATMQ_WS_PERMESSAGE_DEFLATE set, then:

1. fan-out: SUBSCRIBERS browser-like clients (mqtt.js over `ws`, which offers permessage-deflate as
   browsers do: bench/ws_load.mjs) in one conversation; a paho sender publishes MESSAGES chat
   messages at RATE/s (bodies drawn from a fixed list of chat-like sentences, the same in every run);
   measured: broker CPU per delivered message (psutil, the broker child of `chatmq up`), bytes on the
   wire per delivery (TCP bytes the clients read), the load generator's CPU;
2. idle connections: IDLE more clients connect and stay; measured: the broker's RSS per connection.

    .venv/bin/python -m bench.ws_deflate                 # about 4 minutes
    .venv/bin/python -m bench.ws_deflate --rounds 1 --messages 300

Needs `make web` (the load generator uses web/node_modules).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.fanout import children, cpu
from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import open_store

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "bench" / "ws_load.mjs"
CONV = "deflate"
SENTENCES = [
    "ok", "on my way", "see you at 6?", "can you send me the report before the meeting tomorrow",
    "haha yes", "I pushed the fix, the build is green again", "where are we having lunch",
    "the train is 10 minutes late, start without me", "thanks!", "did you see the new designs for the app",
    "let's move the call to Thursday", "sounds good to me 👍", "who is picking up the kids today?",
    "I'll be there in five", "the numbers for March look better than we expected",
]  # fmt: skip


def progress(line: str) -> None:
    print(f"[ws_deflate] {line}", file=sys.stderr, flush=True)


def bodies(count: int) -> list[str]:
    rng = random.Random(42)
    return [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 3))) for _ in range(count)]


def run_setting(deflate: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chatmq-wsdeflate-") as tmp:
        data = Path(tmp) / "data"
        redis_server = LocalRedis(Path(tmp) / "redis", persist=False).start()
        store = open_store(f"sqlite:///{data / 'chatmq.db'}")
        digest = hash_password("unused-bench-password")
        members = [f"s{i:03d}" for i in range(args.subscribers)]
        idle = [f"i{i:04d}" for i in range(args.idle)]
        for user in ["sender", *members, *idle]:
            store.create_user(user, digest)
        store.create_conversation(CONV, ["sender", *members])
        store.close()
        secret = Settings(data_dir=data).load_secret()
        mqtt_port, ws_port, http = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env.update(CHATMQ_LOG_LEVEL="ERROR", CHATMQ_WS_PERMESSAGE_DEFLATE=str(deflate).lower(),
                   CHATMQ_MESSAGES_PER_S="0")  # fmt: skip
        up = subprocess.Popen(
            [sys.executable, "-m", "chatmq.cli", "up", "--data-dir", str(data), "--mqtt-port", str(mqtt_port),
             "--ws-port", str(ws_port), "--http-port", str(http), "--redis-url", redis_server.url], env=env,
        )  # fmt: skip
        url = f"ws://127.0.0.1:{ws_port}/mqtt"

        def load(users: list[str], *extra: str) -> subprocess.Popen[str]:
            tokens = [issue_token(secret, u, 3600).token for u in users]
            return subprocess.Popen(["node", str(LOAD), "--url", url, "--users", ",".join(users),
                                     "--tokens", ",".join(tokens), *extra],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

        try:
            assert wait_for_port("127.0.0.1", http, 60), "stack did not start"
            time.sleep(1.0)
            broker = children(up)["broker"]
            subscribers = load(members, "--conv", CONV, "--expect", str(args.messages))
            assert subscribers.stdout is not None
            ready = json.loads(subscribers.stdout.readline())
            negotiated = "permessage-deflate" in " ".join(ready["extensions"])
            assert negotiated == deflate, f"negotiated {ready['extensions']} with deflate={deflate}"
            sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sender")
            sender.username_pw_set("sender", issue_token(secret, "sender", 3600).token)
            sender.connect("127.0.0.1", mqtt_port, keepalive=120)
            sender.loop_start()
            before = cpu(broker)
            interval = 1.0 / args.rate
            start = time.monotonic()
            for i, body in enumerate(bodies(args.messages)):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                payload = json.dumps({"client_msg_id": f"m{i:06d}-{os.urandom(6).hex()}", "body": body})
                sender.publish(f"chat/{CONV}/send/sender", payload, qos=1)
            done = json.loads(subscribers.stdout.readline())
            broker_s = cpu(broker) - before
            subscribers.wait(30)
            sender.disconnect()
            sender.loop_stop()
            delivered = done["delivered"]
            assert delivered == args.messages * args.subscribers, f"{delivered} deliveries"

            rss_before = broker.memory_info().rss
            idlers = load(idle, "--idle")
            assert idlers.stdout is not None
            json.loads(idlers.stdout.readline())
            time.sleep(2.0)
            rss_after = broker.memory_info().rss
            assert idlers.stdin is not None
            idlers.stdin.close()
            idlers.wait(60)
            return {
                "deflate": deflate, "deliveries": delivered,
                "broker_us_per_delivery": broker_s * 1e6 / delivered,
                "bytes_per_delivery": done["bytes_in"] / delivered,
                "client_bytes_out_per_delivery": done["bytes_out"] / delivered,
                "load_cpu_us_per_delivery": done["cpu_ms"] * 1000 / delivered,
                "broker_kib_per_idle_connection": (rss_after - rss_before) / 1024 / args.idle,
            }  # fmt: skip
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(60)
            redis_server.stop()


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = [k for k in runs[0] if k not in ("deflate", "deliveries")]
    return {
        ("on" if flag else "off"): {k: statistics.median(r[k] for r in runs if r["deflate"] is flag) for k in keys}
        for flag in (False, True)
    }


def table(summary: dict[str, dict[str, float]], rounds: int) -> str:
    off, on = summary["off"], summary["on"]
    rows = [
        ("broker CPU per delivered message", "broker_us_per_delivery", "{:.1f} µs"),
        ("bytes on the wire per delivery (server to client)", "bytes_per_delivery", "{:.0f} B"),
        ("bytes per delivery (client to server: PUBACK)", "client_bytes_out_per_delivery", "{:.1f} B"),
        ("load generator CPU per delivery", "load_cpu_us_per_delivery", "{:.1f} µs"),
        ("broker memory per idle WebSocket connection", "broker_kib_per_idle_connection", "{:.1f} KiB"),
    ]
    lines = [f"| measure (median of {rounds} interleaved rounds) | deflate off | deflate on | on vs off |",
             "|---|---|---|---|"]
    for label, key, fmt in rows:
        change = (on[key] - off[key]) / off[key] if off[key] else 0.0
        lines.append(f"| {label} | {fmt.format(off[key])} | {fmt.format(on[key])} | {change:+.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=40)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second sent")
    parser.add_argument("--idle", type=int, default=500, help="idle WebSocket connections for the memory figure")
    parser.add_argument("--json", type=Path, help="also write the runs and the summary here")
    args = parser.parse_args(argv)
    runs = []
    for round_ in range(args.rounds):
        for deflate in ((False, True) if round_ % 2 == 0 else (True, False)):
            progress(f"round {round_ + 1}/{args.rounds}: deflate {'on' if deflate else 'off'}")
            runs.append(run_setting(deflate, args))
            progress(json.dumps(runs[-1]))
    summary = summarize(runs)
    print(table(summary, args.rounds))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
