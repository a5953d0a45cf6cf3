"""Run every benchmark of the performance targets and print one summary table (``make bench``).

Each benchmark runs in its own process with a time limit and writes its results as JSON; this
driver only reads them back and compares them with the targets of docs/benchmarks.md. A benchmark
that fails or overruns is reported as such, and the others still run.

    .venv/bin/python -m bench.run              # about 45 minutes
    .venv/bin/python -m bench.run --quick      # about 12 minutes
    .venv/bin/python -m bench.run --only e2e,history
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Row = tuple[str, str, str, str]  # measure, value, target, verdict


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    minutes: float  # full run limit; --quick gets a third
    summarize: Callable[[Any], list[Row]]


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def relay_rows(results: dict[str, Any]) -> list[Row]:
    """Ratios are taken within each round (the same run), and their median decides; the range is shown."""
    summary = {(x["broker"], x["scenario"]): x for x in results["summary"]}

    def ratio(values: list[float]) -> tuple[float, str]:
        middle = statistics.median(values)
        spread = f", {min(values):.0%}-{max(values):.0%} over {len(values)} rounds" if len(values) > 1 else ""
        return middle, f"{middle:.0%}{spread}"

    rows: list[Row] = []
    for qos in (0, 1):
        ours = summary.get(("chatmq", f"QoS {qos}, 1 filter"))
        mosq = summary.get(("mosquitto", f"QoS {qos}, 1 filter"))
        if ours and mosq and ours["vs_mosquitto"]:
            middle, shown = ratio(ours["vs_mosquitto"])
            rates = f"{statistics.median(ours['rates']):,.0f} / {statistics.median(mosq['rates']):,.0f} msg/s"
            label = f"relay QoS {qos}: chatmq / Mosquitto"
            rows.append((label, f"{rates} ({shown})", ">= 50%", _verdict(middle >= 0.5)))
        idle = next((x for (b, s), x in summary.items() if b == "chatmq" and s.startswith(f"QoS {qos}, +")), None)
        if idle and idle["vs_one_filter"]:
            middle, shown = ratio(idle["vs_one_filter"])
            rows.append((f"relay QoS {qos}: 10,000 idle filters / 1 filter", shown, ">= 90%", _verdict(middle >= 0.9)))
    return rows


def e2e_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    peak = {r["target"]: r["rate"] for r in results if r["phase"] == "max"}
    if "chatmq" in peak:
        baselines = ", ".join(f"{name} {value:,.0f}" for name, value in peak.items() if name != "chatmq")
        rows.append(("e2e sustained (durable, acked, delivered)", f"{peak['chatmq']:,.0f} msg/s ({baselines})",
                     ">= 5,000 msg/s", _verdict(peak["chatmq"] >= 5000)))  # fmt: skip
    at_1k = next((r for r in results if r["target"] == "chatmq" and r["offered"] == 1000), None)
    if at_1k is not None:
        rows.append(("e2e send->deliver p99 at 1,000 msg/s", f"{at_1k['deliver_p99']:.1f} ms", "<= 20 ms",
                     _verdict(at_1k["deliver_p99"] <= 20 and at_1k["incomplete"] == 0)))  # fmt: skip
    return rows


def connections_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "kib_per_connection" in r:
        rows.append((f"broker memory per connection ({r.get('devices', 0):,} devices)",
                     f"{r['kib_per_connection']:.1f} KiB", "<= 30 KiB", _verdict(r["kib_per_connection"] <= 30)))
    if "idle_cpu_percent" in r:
        rows.append(("broker CPU with every device idle", f"{r['idle_cpu_percent']:.1f}% of a core", "", ""))
    if "latency_p99_ms" in r:
        rows.append(("delivery p99 with every device connected", f"{r['latency_p99_ms']:.1f} ms", "", ""))
    if r.get("storm_all_receiving_s") is not None:
        storm = float(r["storm_all_receiving_s"])
        label = "reconnect storm: all reconnected and receiving"
        rows.append((label, f"{storm:.1f} s", "<= 30 s", _verdict(storm <= 30)))
    return rows


def history_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for result in r.get("results", []):
        if result.get("api") not in (None, "current"):
            continue
        label = f"history {result['messages']:,} msgs, {result['mode']}"
        rows.append((label, f"server p99 {result['server_p99_ms']:.2f} ms, {result['requests_per_s']:,.0f} req/s",
                     "p99 <= 5 ms, >= 2,000 req/s", _verdict(result.get("meets_targets"))))  # fmt: skip
    return rows


BENCHES = (
    Bench("relay", "bench.relay", 16, relay_rows),
    Bench("e2e", "bench.e2e", 8, e2e_rows),
    Bench("connections", "bench.connections", 8, connections_rows),
    Bench("history", "bench.history", 10, history_rows),
)


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_one(bench: Bench, quick: bool, out: Path) -> list[Row]:
    limit = bench.minutes * 60 / (3 if quick else 1)
    command = [sys.executable, "-m", bench.module, "--json", str(out), *(["--quick"] if quick else [])]
    progress(f"{bench.name}: {' '.join(command[1:])} (limit {limit / 60:.0f} min)")
    began = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, timeout=limit)
    except subprocess.TimeoutExpired:
        return [(bench.name, f"did not finish in {limit / 60:.0f} min", "", "FAILED")]
    took = time.monotonic() - began
    if done.returncode != 0 or not out.exists():
        return [(bench.name, f"exit status {done.returncode} after {took:.0f} s", "", "FAILED")]
    progress(f"{bench.name}: done in {took:.0f} s")
    return bench.summarize(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--keep", type=Path, help="keep each benchmark's JSON in this directory")
    args = parser.parse_args(argv)
    wanted = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    progress(f"running {', '.join(b.name for b in wanted)}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="chatmq-bench-run-") as tmp:
        place = args.keep or Path(tmp)
        place.mkdir(parents=True, exist_ok=True)
        for bench in wanted:
            rows += run_one(bench, args.quick, place / f"{bench.name}.json")
    print()
    print("| measure | value | target | |")
    print("|---|---|---|---|")
    for measure, value, target, verdict in rows:
        print(f"| {measure} | {value} | {target} | {verdict} |")


if __name__ == "__main__":
    main()
