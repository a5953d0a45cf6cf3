"""Run every benchmark of issue 23's performance targets and print one table against them (``make bench``).

Each benchmark runs in its own process with a time limit and writes its results as JSON; this
driver only reads them back and compares them with the targets. A benchmark that fails or
overruns is reported as such, and the others still run. Beside the figures: the load generators'
own CPU and the machine's load average (this machine is shared: a figure taken under load says so).

    .venv/bin/python -m bench.run              # about 75 minutes
    .venv/bin/python -m bench.run --quick      # about 20 minutes
    .venv/bin/python -m bench.run --only e2e,durability --keep /tmp/bench-json
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
    extra: tuple[str, ...] = ()  # further arguments


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def _load(value: float | None) -> str:
    """A note for figures taken while the machine was loaded beyond its cores."""
    cores = os.cpu_count() or 1
    return f" [load {value:.1f} on {cores} cores]" if value is not None and value > cores else ""


def _spread(values: list[float]) -> tuple[float, str]:
    middle = statistics.median(values)
    spread = f", {min(values):.0%}-{max(values):.0%} over {len(values)} rounds" if len(values) > 1 else ""
    return middle, f"{middle:.0%}{spread}"


def relay_rows(results: dict[str, Any]) -> list[Row]:
    """Ratios are taken within each round (the same run), and their median decides; the range is shown."""
    summary = {(x["broker"], x["scenario"]): x for x in results["summary"]}
    rows: list[Row] = []
    for qos in (0, 1):
        scenario = f"QoS {qos}, 1 filter"
        ours, mosq = summary.get(("chatmq", scenario)), summary.get(("mosquitto", scenario))
        if ours and mosq and ours["vs_mosquitto"]:
            middle, shown = _spread(ours["vs_mosquitto"])
            clients = ours["median"].get("generator_cpu_us", 0.0)
            rates = (f"{statistics.median(ours['rates']):,.0f} / {statistics.median(mosq['rates']):,.0f} msg/s"
                     f" ({shown}; clients' CPU {clients:.0f} µs/msg)")  # fmt: skip
            target = ">= 80% (Mosquitto uncapped)" if qos == 1 else ""
            rows.append((f"relay QoS {qos}: chatmq / Mosquitto", rates, target, _verdict(middle >= 0.8) if qos else ""))
        by_round = {(r["round"], r["broker"]): r for r in results["results"] if r["scenario"] == scenario}
        cpu_ratios = [r["broker_cpu_us"] / m["broker_cpu_us"] for (n, b), r in by_round.items()
                      if b == "chatmq" and (m := by_round.get((n, "mosquitto"))) and m["broker_cpu_us"]
                      and r["broker_cpu_us"]]  # fmt: skip
        if cpu_ratios and qos == 1:
            middle = statistics.median(cpu_ratios)
            mine = statistics.median(r["broker_cpu_us"] for (_, b), r in by_round.items() if b == "chatmq")
            theirs = statistics.median(r["broker_cpu_us"] for (_, b), r in by_round.items() if b == "mosquitto")
            rows.append((f"relay QoS {qos}: broker CPU per relayed message, chatmq / Mosquitto",
                         f"{mine:.0f} / {theirs:.0f} µs ({middle:.1f}x)", "<= 1.5x",
                         _verdict(middle <= 1.5)))  # fmt: skip
        idle = next((x for (b, s), x in summary.items() if b == "chatmq" and s.startswith(f"QoS {qos}, +")), None)
        if idle and idle["vs_one_filter"]:
            middle, shown = _spread(idle["vs_one_filter"])
            rows.append((f"relay QoS {qos}: 10,000 idle filters / 1 filter", shown, ">= 90%", _verdict(middle >= 0.9)))
    return rows


def _clean(row: dict[str, Any]) -> bool:
    """The issue's clean rate: >= 95% achieved, nothing lost, deliver p99 <= 50 ms."""
    return _kept_up(row) and row["duplicates"] == 0 and row["deliver_p99"] <= 50


def _kept_up(row: dict[str, Any]) -> bool:
    return row["rate"] >= 0.95 * row["offered"] and row["incomplete"] == 0


def e2e_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    ours = [r for r in results if r["target"] == "chatmq"]
    at = {r["offered"]: r for r in ours if r["offered"]}
    steady = at.get(2000.0)
    if steady is not None and steady["server_cpu_ms_per_msg"] is not None:
        parts = " + ".join(f"{n} {v:.3f}" for n, v in steady["cpu_ms_per_msg"].items())
        rows.append(("server CPU per durable chat message at 2,000 msg/s (FULL, rate limiter on)",
                     f"{steady['server_cpu_ms_per_msg']:.3f} ms ({parts}; generator "
                     f"{steady['generator_cpu_ms_per_msg']:.3f} ms){_load(steady['load_average'])}",
                     "<= 0.25 ms", _verdict(steady["server_cpu_ms_per_msg"] <= 0.25) if _kept_up(steady)
                     else "not steady: fell behind the rate"))  # fmt: skip
    peak = {r["target"]: r for r in results if r["phase"] == "max"}
    clean = [r["offered"] for r in ours if r["offered"] and _clean(r)]
    if "chatmq" in peak:
        best = max(clean, default=0.0)
        mine = peak["chatmq"]
        rows.append(("e2e durable msg/s, lean generator: highest clean rate (closed loop)",
                     f"{best:,.0f} ({mine['rate']:,.0f}; generator {mine['generator_cores']:.2f} cores)"
                     f"{_load(mine['load_average'])}", ">= 8,000 msg/s", _verdict(best >= 8000)))  # fmt: skip
    if "chatmq" in peak and "mosquitto" in peak and peak["mosquitto"]["rate"]:
        share = peak["chatmq"]["rate"] / peak["mosquitto"]["rate"]
        baselines = ", ".join(f"{name} {r['rate']:,.0f}" for name, r in peak.items() if name != "chatmq")
        rows.append(("e2e closed loop, chatmq / Mosquitto raw relay, lean generator",
                     f"{share:.0%} ({baselines} msg/s)", ">= 50% with a paho generator",
                     "not judged: no paho generator yet"))  # fmt: skip
    for rate, limit in ((2000.0, 10.0), (4000.0, 20.0)):
        r = at.get(rate)
        if r is None:
            rows.append((f"e2e deliver p99 at {rate:,.0f} msg/s", "not measured (ladder ended below)",
                         f"<= {limit:g} ms", "MISSED"))  # fmt: skip
            continue
        rows.append((f"e2e deliver p50 / p99 / p99.9 at {rate:,.0f} msg/s ({r['seconds']:.0f} s, open loop)",
                     f"{r['deliver_p50']:.1f} / {r['deliver_p99']:.1f} / {r['deliver_p999']:.1f} ms, "
                     f"{r['incomplete']} incomplete, {r['duplicates']} dup, generator lag p99 {r['lag_p99']:.1f} ms"
                     f"{_load(r['load_average'])}", f"p99 <= {limit:g} ms",
                     _verdict(r["deliver_p99"] <= limit and r["incomplete"] == 0)))  # fmt: skip
    return rows


def connections_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    load = _load(r.get("loadavg_start"))
    devices = r.get("devices", 0)
    if "kib_per_connection" in r:
        rows.append((f"broker memory per idle connection ({devices:,} devices)",
                     f"{r['kib_per_connection']:.1f} KiB{load}", "<= 12 KiB",
                     _verdict(r["kib_per_connection"] <= 12)))  # fmt: skip
    if "idle_cpu_percent" in r:
        rows.append((f"broker CPU with {devices:,} devices idle", f"{r['idle_cpu_percent']:.1f}% of a core "
                     f"(generator {r.get('idle_generator_cpu_percent', 0):.1f}%)", "", ""))  # fmt: skip
    if "latency_p99_ms" in r:
        rows.append(("delivery p99 with every device connected", f"{r['latency_p99_ms']:.1f} ms", "", ""))
    if "storm_connected" in r:
        storm = r.get("storm_all_receiving_s")
        value = "not all receiving" if storm is None else f"{float(storm):.1f} s"
        rows.append((f"reconnect storm ({devices:,}): all reconnected and receiving",
                     f"{value} (generator {r.get('storm_generator_cpu_s', 0):.1f} CPU s)"
                     f"{_load(r.get('storm_load_average'))}", "<= 10 s",
                     _verdict(storm is not None and float(storm) <= 10)))  # fmt: skip
    return rows


def hold_rows(r: dict[str, Any]) -> list[Row]:
    devices, connected = r.get("devices", 0), r.get("connected", 0)
    if "kib_per_connection" not in r:
        return [(f"{devices:,} idle connections held", f"{connected:,} connected", "all", "MISSED")]
    return [(f"{devices:,} idle connections held on one broker",
             f"{connected:,} connected in {r['connect_s']:.0f} s; {r['rss_connected_mib']:,.0f} MiB RSS "
             f"({r['kib_per_connection']:.1f} KiB each), {r['idle_cpu_percent']:.1f}% of a core idle"
             f"{_load(r.get('loadavg_start'))}", "all held", _verdict(connected >= devices))]  # fmt: skip


def history_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for result in r.get("results", []):
        if result.get("api") not in (None, "current"):
            continue
        label = f"history {result['messages']:,} msgs, {result['mode']}"
        rows.append((label, f"{result['requests_per_s']:,.0f} req/s, client p99 {result['client_p99_ms']:.2f} ms "
                     f"(server p99 {result['server_p99_ms']:.2f}; wrk {result['wrk_cpu_ms_per_request']:.3f} ms/req)",
                     ">= 4,000 req/s, client p99 <= 5 ms", _verdict(result.get("meets_targets"))))  # fmt: skip
    return rows


def fanout_rows(results: list[dict[str, Any]]) -> list[Row]:
    return [(f"{r['members']:,}-member group, fan-out on {r['mode']}: send -> last member p50 / p99",
             f"{r['last_delivery_p50_ms']:.0f} / {r['last_delivery_p99_ms']:.0f} ms ({r['deliveries']:.0f} "
             f"delivered; broker {r.get('broker_cpu_ms', 0):.0f} + bridge {r.get('bridge_cpu_ms', 0):.0f} ms CPU; "
             f"generator {r['generator_cpu_ms_per_msg']:.0f} ms){_load(r['load_average'])}", "report", "")
            for r in results]  # fmt: skip


def durability_rows(r: dict[str, Any]) -> list[Row]:
    f = r["fsync"]
    rows: list[Row] = [("fsync (fdatasync, 4 KiB append) p50 / p99; syncs/s",
                        f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f} ms; {f['syncs_per_s']:,.0f}/s"
                        f"{_load(r.get('load_average'))}", "report", "")]  # fmt: skip
    by = {(s["synchronous"], s["batch"]): s for s in r["summary"]}
    for (mode, batch), s in by.items():
        if mode != "FULL" or ("NORMAL", batch) not in by:
            continue
        n = by[("NORMAL", batch)]
        rows.append((f"store commits/s, {batch} msg/commit: FULL / NORMAL",
                     f"{s['commits_per_s']:,.0f} / {n['commits_per_s']:,.0f} ({s['messages_per_s']:,.0f} / "
                     f"{n['messages_per_s']:,.0f} msg/s; commit p99 {s['commit_p99_ms']:.1f} / {n['commit_p99_ms']:.1f}"
                     " ms)", "report; FULL kept", ""))  # fmt: skip
    return rows


BENCHES = (
    Bench("e2e", "bench.e2e", 30, e2e_rows),
    Bench("relay", "bench.relay", 16, relay_rows),
    Bench("durability", "bench.durability", 5, durability_rows),
    Bench("fanout", "bench.fanout", 12, fanout_rows),
    Bench("connections", "bench.connections", 8, connections_rows),
    Bench("hold50k", "bench.connections", 15, hold_rows, ("--devices", "50000", "--hold-only")),
    Bench("history", "bench.history", 10, history_rows),
)


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_one(bench: Bench, quick: bool, out: Path) -> list[Row]:
    limit = bench.minutes * 60 / (3 if quick else 1)
    command = [sys.executable, "-m", bench.module, "--json", str(out), *bench.extra, *(["--quick"] if quick else [])]
    progress(f"{bench.name}: {' '.join(command[1:])} (limit {limit / 60:.0f} min; load {os.getloadavg()[0]:.1f})")
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
    one, five, fifteen = os.getloadavg()
    progress(f"running {', '.join(b.name for b in wanted)}; {os.cpu_count()} CPUs, load average "
             f"{one:.2f}, {five:.2f}, {fifteen:.2f}")  # fmt: skip
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="chatmq-bench-run-") as tmp:
        place = args.keep or Path(tmp)
        place.mkdir(parents=True, exist_ok=True)
        for bench in wanted:
            rows += run_one(bench, args.quick, place / f"{bench.name}.json")
    print()
    print(f"issue 23's targets; {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.2f} "
          "([load N] marks a figure taken while the machine was loaded beyond its cores)")  # fmt: skip
    print()
    print("| measure | value | target | |")
    print("|---|---|---|---|")
    for measure, value, target, verdict in rows:
        print(f"| {measure} | {value} | {target} | {verdict} |")


if __name__ == "__main__":
    main()
