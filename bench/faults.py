"""Fault injection: kill -9 and restart each chatmq component, repeatedly, under a steady chat load.

Runs Redis, the broker, the bridge and the API as four separate processes (bench/cluster.py) on
fixed ports in one data dir, drives them with client-library devices (bench/faultload.py), and
in every cycle SIGKILLs and restarts each component in turn. Afterwards it waits for every send
to be acked and every member to have every message, then checks acks and deliveries against the
stored history (bench/faultcheck.py). Exit status 0 only if nothing was lost, duplicated,
reordered, left unacked or undelivered.

    .venv/bin/python -m bench.faults --cycles 20                  # 20 cycles of all four components
    .venv/bin/python -m bench.faults --cycles 3 --components bridge,broker --json
    .venv/bin/python -m bench.faults --cycles 100 --max-seconds 600   # as many cycles as fit
    .venv/bin/python -m bench.faults --workers 3 --cycles 10          # 3 partitioned bridge workers
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster import COMPONENTS, SECOND_BRIDGE, Cluster
from bench.faultcheck import Report, check, read_history
from bench.faultload import Load, plan, provision


@dataclass
class Options:
    cycles: int = 20
    components: tuple[str, ...] = COMPONENTS
    users: int = 6
    convs: int = 4
    members: int = 3
    rate: float = 40.0  # sends per second, all devices together
    down_s: tuple[float, float] = (0.2, 1.5)  # how long a killed component stays dead
    up_s: tuple[float, float] = (1.0, 2.5)  # load on the healthy system between kills
    max_seconds: float = 900.0  # stop starting new cycles after this
    settle_s: float = 90.0  # after the last cycle: time for every ack and delivery to arrive
    seed: int = 1
    bridges: int = 1  # 2: a second bridge process runs (and is killed) alongside the first
    workers: int = 0  # N: partitioned bridge workers w1..wN instead of the single bridge
    lease_s: float = 2.0  # the workers' lease TTL (how long a dead worker's partitions wait)


def worker_ids(count: int) -> tuple[str, ...]:
    return tuple(f"w{n}" for n in range(1, count + 1))


@dataclass
class Outcome:
    cycles: int
    kills: dict[str, int]
    seconds: float
    report: Report
    restart_s: dict[str, float] = field(default_factory=dict)  # worst time back to healthy

    def as_dict(self) -> dict[str, Any]:
        return {"cycles": self.cycles, "kills": self.kills, "seconds": round(self.seconds, 1),
                "worst_recovery_s": {k: round(v, 2) for k, v in self.restart_s.items()},
                "check": self.report.as_dict()}


def run(options: Options, data_dir: Path, log: Any = print) -> Outcome:
    rng = random.Random(options.seed)
    conversations = plan(options.users, options.convs, options.members)
    cluster = Cluster(data_dir, bridges=options.bridges, workers=worker_ids(options.workers),
                      extra_env={"CHATMQ_BRIDGE_LEASE_S": str(options.lease_s)} if options.workers else {})
    kills = dict.fromkeys(options.components, 0)
    worst = dict.fromkeys(options.components, 0.0)
    started = time.monotonic()
    load: Load | None = None
    cycles = 0
    try:
        provision(cluster.store_url, conversations)
        cluster.start()
        load = Load(cluster.mqtt_port, cluster.api_url, data_dir / "devices", conversations, options.rate,
                    seed=options.seed).start()
        time.sleep(rng.uniform(*options.up_s))
        while cycles < options.cycles and time.monotonic() - started < options.max_seconds:
            for name in options.components:
                cluster.kill(name)
                kills[name] += 1
                time.sleep(rng.uniform(*options.down_s))
                t0 = time.monotonic()
                cluster.restart(name)
                cluster.wait_healthy(60)
                worst[name] = max(worst[name], time.monotonic() - t0)
                time.sleep(rng.uniform(*options.up_s))
            cycles += 1
            log(f"cycle {cycles}: sent {len(load.record.sent)} acked {len(load.record.acks)} "
                f"({time.monotonic() - started:.0f} s)")
        load.stop_sending()
        drained = load.drain(options.settle_s)
        history = read_history(cluster.store_url, list(conversations))
        expected = {conv: len(messages) for conv, messages in history.items()}
        delivered = load.wait_delivered(expected, options.settle_s)
        if not (drained and delivered):
            log(f"settle timed out: drained={drained} delivered={delivered}")
        report = check(load.record, history, conversations)
    finally:
        if load is not None:
            load.close()
        cluster.stop()
    return Outcome(cycles, kills, time.monotonic() - started, report, worst)


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20, help="kill/restart rounds (each kills every component)")
    parser.add_argument("--components", default=",".join(COMPONENTS), help="which to kill, in this order")
    parser.add_argument("--rate", type=float, default=40.0, help="sends per second in total")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--convs", type=int, default=4)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="start no new cycle after this")
    parser.add_argument("--settle-seconds", type=float, default=90.0)
    parser.add_argument("--fast", action="store_true", help="short pauses between faults (for the test suite)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bridges", type=int, choices=(1, 2), default=1,
                        help="2: run a second bridge process (add bridge2 to --components to kill it too)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run N partitioned bridge workers (w1..wN) instead of the single bridge; "
                             "default components then: every worker, broker, api, redis")
    parser.add_argument("--lease", type=float, default=2.0, help="the workers' lease TTL in seconds")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep state and logs here (default: temp)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    args = parser.parse_args(argv)
    workers = worker_ids(args.workers)
    if workers and args.components == ",".join(COMPONENTS):
        args.components = ",".join((*workers, "broker", "api", "redis"))
    components = tuple(c.strip() for c in args.components.split(",") if c.strip())
    valid = {"broker", "api", "redis", *workers} if workers else {*COMPONENTS, SECOND_BRIDGE}
    unknown = set(components) - valid
    if unknown:
        parser.error(f"unknown components: {', '.join(sorted(unknown))} (choose from {', '.join(sorted(valid))})")
    options = Options(cycles=args.cycles, components=components, users=args.users, convs=args.convs,
                      members=args.members, rate=args.rate, max_seconds=args.max_seconds,
                      settle_s=args.settle_seconds, seed=args.seed, bridges=args.bridges,
                      workers=args.workers, lease_s=args.lease)
    if SECOND_BRIDGE in components and args.bridges < 2:
        parser.error("--components bridge2 needs --bridges 2")
    if args.fast:
        options.down_s, options.up_s = (0.1, 0.4), (0.5, 1.0)
    return options, args


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    log = (lambda *_: None) if args.json else print
    if args.data_dir is not None:
        outcome = run(options, args.data_dir, log)
    else:
        with tempfile.TemporaryDirectory(prefix="chatmq-faults-") as tmp:
            outcome = run(options, Path(tmp), log)
    if args.json:
        print(json.dumps(outcome.as_dict()))
    else:
        print(json.dumps(outcome.as_dict(), indent=2))
        print("PASS" if outcome.report.ok else "FAIL")
    return 0 if outcome.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
