"""The per-sender send limiter's cost: ``MessageRate.allow`` on a private Redis, per decision.

The bridge asks it once per writer batch (one pipelined round trip for the batch's senders).
Reported per decision: the caller's CPU (this process), Redis's CPU (from /proc, 10 ms ticks: read
it over many calls) and the wall time per batch, for batches of ``--batch`` senders, over
``--rounds`` rounds. With ``--baseline FILE`` (an older ``chatmq/core/ratelimit.py``, e.g. from
``git show main~1:chatmq/core/ratelimit.py``) both run interleaved round by round, the order
alternating, against the same Redis.

    .venv/bin/python -m bench.ratelimit --batch 10
    git show REV:chatmq/core/ratelimit.py > /tmp/old.py && .venv/bin/python -m bench.ratelimit --baseline /tmp/old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import redis

from chatmq.cli.localredis import LocalRedis
from chatmq.core import ratelimit


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_ratelimit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10, help="senders per allow() call (a writer batch)")
    parser.add_argument("--decisions", type=int, default=3000, help="decisions per round and variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline", type=Path, help="an older chatmq/core/ratelimit.py to compare with")
    args = parser.parse_args(argv)
    variants: dict[str, ModuleType] = {"current": ratelimit}
    if args.baseline:
        variants = {"baseline": _load(args.baseline), **variants}
    senders = [f"user-{i}" for i in range(args.batch)]
    calls = max(1, args.decisions // args.batch)
    with tempfile.TemporaryDirectory(prefix="chatmq-rl-") as tmp:
        server = LocalRedis(Path(tmp) / "redis", persist=False).start()
        try:
            client = redis.Redis.from_url(server.url)
            assert server.process is not None
            redis_proc = psutil.Process(server.process.pid)
            rates: dict[str, Any] = {
                name: module.MessageRate(client, 1000, 1_000_000, what=name) for name, module in variants.items()
            }
            rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in rates}
            for rnd in range(args.rounds):
                order = list(rates) if rnd % 2 == 0 else list(reversed(rates))
                for name in order:
                    rate = rates[name]
                    cpu0, redis0, wall0 = time.process_time(), sum(redis_proc.cpu_times()[:2]), time.perf_counter()
                    for _ in range(calls):
                        rate.allow(senders)
                    cpu1, redis1, wall1 = time.process_time(), sum(redis_proc.cpu_times()[:2]), time.perf_counter()
                    decisions = calls * args.batch
                    rows[name].append(((cpu1 - cpu0) / decisions * 1e6, (redis1 - redis0) / decisions * 1e6,
                                       (wall1 - wall0) / calls * 1e6))  # fmt: skip
        finally:
            server.stop()
    print(f"MessageRate.allow, batches of {args.batch}, {args.rounds} rounds of {calls * args.batch} decisions "
          f"(medians, range); load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print("| variant | caller CPU µs/decision | Redis CPU µs/decision | wall µs/batch |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        cols = []
        for i in range(3):
            col = [v[i] for v in values]
            cols.append(f"{statistics.median(col):.1f} ({min(col):.1f}-{max(col):.1f})")
        print(f"| {name} | {' | '.join(cols)} |")


if __name__ == "__main__":
    main()
