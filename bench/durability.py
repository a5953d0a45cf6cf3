"""What durability costs on this disk: fsync latency, durable commits per second, and the store's
append with ``synchronous=FULL`` (what the bridge runs) against ``synchronous=NORMAL``.

1. fsync: append 4 KiB to a file and ``fdatasync`` it, again and again, for --seconds: latency
   p50/p99/p99.9 and syncs per second. This is the floor under every durable ack.
2. The store: ``SQLiteStore.append`` exactly as the bridge's writer calls it, with one message per
   commit and with batches (--batches, the writer batches what queued up during the last commit),
   on a fresh SQLite file per run, FULL and NORMAL taking turns (--rounds, interleaved, the order
   alternating), so a busy minute of the shared machine hits both. Reported: commits/s, messages/s,
   commit latency p50/p99, CPU per message (the fsync is wall time, not CPU).

FULL stays the product's setting: under WAL, NORMAL does not fsync at commit, so a power loss (not
a process crash) may take the last commits, i.e. messages already acked. The A/B says what that
guarantee costs.

    .venv/bin/python -m bench.durability                  # about 2 minutes
    .venv/bin/python -m bench.durability --quick          # about 30 seconds
    .venv/bin/python -m bench.durability --dir /var/lib/chatmq   # the disk the store will live on
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import machine_load, self_cpu_s
from chatmq.core.store.base import NewMessage
from chatmq.core.store.sqlite import SQLiteStore

BLOCK = b"x" * 4096
CONVERSATIONS = 50


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def fsync_latency(directory: Path, seconds: float) -> dict[str, float]:
    """Append a block and fdatasync it until ``seconds`` have passed."""
    path = directory / "fsync.probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fd, BLOCK)
            began = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"syncs": len(times), "syncs_per_s": len(times) / sum(times) * 1000, "p50_ms": pct(times, 0.5),
            "p99_ms": pct(times, 0.99), "p999_ms": pct(times, 0.999), "max_ms": times[-1]}  # fmt: skip


def store_run(directory: Path, full: bool, batch: int, seconds: float) -> dict[str, float]:
    """Append batches of ``batch`` messages for ``seconds`` into a fresh store."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = SQLiteStore(str(Path(tmp) / "store.db"), sync_every_commit=full)
        try:
            store.create_user("alice", "unused")
            for c in range(CONVERSATIONS):
                store.create_conversation(f"c{c}", ["alice"])
            times: list[float] = []
            n = 0
            cpu_before = self_cpu_s()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                messages = [NewMessage(f"c{(n + i) % CONVERSATIONS}", "alice", f"m{n + i}", "x" * 200,
                                       int(time.time() * 1000)) for i in range(batch)]  # fmt: skip
                began = time.perf_counter()
                store.append(messages)
                times.append((time.perf_counter() - began) * 1000)
                n += batch
            cpu = self_cpu_s() - cpu_before
        finally:
            store.close()
    times.sort()
    wall = sum(times) / 1000
    return {"commits": len(times), "commits_per_s": len(times) / wall, "messages_per_s": n / wall,
            "commit_p50_ms": pct(times, 0.5), "commit_p99_ms": pct(times, 0.99),
            "cpu_us_per_msg": 1e6 * cpu / max(n, 1)}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="a directory on the disk to measure [%(default)s]")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=None, help="length of each run [5; quick 2]")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved FULL/NORMAL rounds [5; quick 2]")
    parser.add_argument("--batches", default="1,20", help="messages per commit, comma-separated [%(default)s]")
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--json", type=Path, help="write the results here (for bench/run.py)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.batch_sizes = [int(b) for b in args.batches.split(",") if b]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    progress(f"durability on {args.dir} ({os.statvfs(args.dir).f_bsize}-byte blocks); {machine_load()}")
    results: dict[str, Any] = {"dir": str(args.dir), "load_average": os.getloadavg()[0]}
    results["fsync"] = fsync = fsync_latency(args.dir, args.seconds * 2)
    progress(f"fdatasync of a 4 KiB append: p50 {fsync['p50_ms']:.2f} ms, p99 {fsync['p99_ms']:.2f} ms, "
             f"p99.9 {fsync['p999_ms']:.2f} ms, {fsync['syncs_per_s']:,.0f} syncs/s")  # fmt: skip
    runs: list[dict[str, Any]] = []
    for n in range(args.rounds):
        for batch in args.batch_sizes:
            for full in (True, False) if n % 2 == 0 else (False, True):
                row = {"round": n + 1, "synchronous": "FULL" if full else "NORMAL", "batch": batch,
                       **store_run(args.dir, full, batch, args.seconds)}  # fmt: skip
                runs.append(row)
                progress(f"round {n + 1} {row['synchronous']:<6} {batch:>3}/commit: {row['commits_per_s']:,.0f}"
                         f" commits/s, {row['messages_per_s']:,.0f} msg/s, commit p50 {row['commit_p50_ms']:.2f}"
                         f" p99 {row['commit_p99_ms']:.2f} ms, CPU {row['cpu_us_per_msg']:.0f} us/msg")  # fmt: skip
    summary = []
    for batch in args.batch_sizes:
        for mode in ("FULL", "NORMAL"):
            mine = [r for r in runs if r["batch"] == batch and r["synchronous"] == mode]
            summary.append({"synchronous": mode, "batch": batch, **{
                key: statistics.median(r[key] for r in mine)
                for key in ("commits_per_s", "messages_per_s", "commit_p50_ms", "commit_p99_ms", "cpu_us_per_msg")
            }})  # fmt: skip
    results.update(runs=runs, summary=summary, load_average_end=os.getloadavg()[0])
    print()
    print(f"fsync (fdatasync of a 4 KiB append) on {args.dir}: p50 {fsync['p50_ms']:.2f} ms, "
          f"p99 {fsync['p99_ms']:.2f} ms, p99.9 {fsync['p999_ms']:.2f} ms; {fsync['syncs_per_s']:,.0f} syncs/s")
    print()
    print(f"| synchronous | messages/commit | commits/s | messages/s | commit p50 / p99 ms | CPU µs/msg |"
          f"  (medians of {args.rounds} interleaved rounds)")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['synchronous']} | {s['batch']} | {s['commits_per_s']:,.0f} | {s['messages_per_s']:,.0f} | "
              f"{s['commit_p50_ms']:.2f} / {s['commit_p99_ms']:.2f} | {s['cpu_us_per_msg']:.0f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
