"""What a send waits while the search index is compacted (SQLite): step sizes and pauses, A/B.

``Store.compact_search_index`` merges FTS5's segments in steps, each one write transaction holding
SQLite's write lock; a send (the bridge's ``append``) that arrives meanwhile waits for it. This
benchmark measures that wait, per compaction setting, interleaved in one run:

1. Fills a template database once through the store's ``append`` (the bridge's write path):
   ``--messages`` messages of 20 words from a 5,000-word vocabulary in 10 conversations, then
   deletes ``--deleted`` of them (so the compaction has words to drop).
2. For each round and each variant (``PAGES:PAUSE_S``), on a fresh copy of the template: a child
   process runs ``compact_search_index`` with that step size and pause, while this process sends
   one message every ``--interval-ms`` (an ``append`` of one message, as the bridge's smallest
   batch) on a fixed schedule, each timed from its intended send time (no coordinated omission),
   from the compaction's start to its end. Then the same sends without a compaction: the floor.
3. Reports per variant: the compaction's wall time and steps, and the sends' p50 / p99 / max
   latency during it, and the CPU of the sending process per send.

    .venv/bin/python -m bench.compaction --quick
    .venv/bin/python -m bench.compaction --messages 100000 --deleted 1000 --rounds 3 \\
        --variant 1000:0 --variant 200:0.005
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage
from chatmq.core.store.sqlite import SQLiteStore

VOCABULARY = [f"w{n:04d}x" for n in range(5_000)]
CONVS = [f"room{n}" for n in range(10)]


def log(message: str) -> None:
    print(f"[compaction {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fill(path: Path, messages: int, deleted: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    store = SQLiteStore(str(path))
    store.create_user("alice", "h")
    store.create_user("bob", "h")
    for conv in CONVS:
        store.create_conversation(conv, ["alice", "bob"])
    ts = 1_700_000_000_000
    batch: list[NewMessage] = []
    for n in range(messages):
        body = " ".join(rng.choices(VOCABULARY, k=20))
        batch.append(NewMessage(CONVS[n % len(CONVS)], "alice", f"f{n}", body, ts + n))
        if len(batch) == 1_000:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)
    per_conv = messages // len(CONVS)
    victims = rng.sample(range(1, per_conv + 1), deleted // len(CONVS))
    deletes = [NewMessage(conv, "alice", f"d{conv}-{seq}", "", ts + messages + seq, kind=EntryKind.DELETE,
                          target=seq) for conv in CONVS for seq in victims]  # fmt: skip
    for start in range(0, len(deletes), 500):
        store.append(deletes[start : start + 500])
    store.close()
    with sqlite3.connect(path) as conn:  # everything in the main file: the rounds copy that alone
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _compact(path: str, pages: int, pause_s: float, started: multiprocessing.synchronize.Event,
             result: multiprocessing.Queue) -> None:  # fmt: skip
    from chatmq.core.store import sqlite

    sqlite.SEARCH_MERGE_PAGES = pages
    sqlite.SEARCH_MERGE_PAUSE_S = pause_s
    store = sqlite.SQLiteStore(path)
    started.set()
    t0 = time.perf_counter()
    steps = store.compact_search_index()
    result.put((steps, time.perf_counter() - t0))
    store.close()


def sends(store: SQLiteStore, interval_s: float, until: callable, tag: str) -> tuple[list[float], float]:  # type: ignore[valid-type]
    """One message every ``interval_s`` until ``until()``; latencies (s) from the intended time, CPU per send."""
    latencies: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    n = 0
    while not until():
        intended = start + n * interval_s
        now = time.perf_counter()
        if now < intended:
            time.sleep(intended - now)
        store.append([NewMessage(CONVS[n % len(CONVS)], "bob", f"{tag}-{n}", "live send during compaction", 1)])
        latencies.append(time.perf_counter() - intended)
        n += 1
    return latencies, (time.process_time() - cpu0) / max(1, n)


def one_round(template: Path, work: Path, pages: int, pause_s: float, interval_s: float, tag: str) -> dict:
    shutil.copyfile(template, work)
    for suffix in ("-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    store = SQLiteStore(str(work))
    ctx = multiprocessing.get_context("spawn")
    started, result = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_compact, args=(str(work), pages, pause_s, started, result))
    child.start()
    started.wait(60)
    done: list[tuple[int, float]] = []

    def finished() -> bool:
        if not done and not result.empty():
            done.append(result.get())
        return bool(done)

    latencies, cpu = sends(store, interval_s, finished, tag)
    child.join(60)
    store.close()
    steps, wall = done[0]
    return {"steps": steps, "wall": wall, "lat": latencies, "cpu": cpu}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--deleted", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--variant", action="append", default=None, help="PAGES:PAUSE_S (repeatable)")
    parser.add_argument("--quick", action="store_true", help="30,000 messages, 300 deleted, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.deleted, args.rounds = 30_000, 300, 2
    variants = [(int(p), float(s)) for p, s in (v.split(":") for v in (args.variant or ["1000:0", "200:0.005"]))]
    with tempfile.TemporaryDirectory(prefix="chatmq-compaction-") as tmp:
        template, work = Path(tmp) / "template.db", Path(tmp) / "work.db"
        t0 = time.perf_counter()
        fill(template, args.messages, args.deleted)
        log(f"filled {args.messages:,} messages, {args.deleted:,} deleted, in {time.perf_counter() - t0:.1f} s")
        results: dict[tuple[int, float], list[dict]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for pages, pause in variants if r % 2 == 0 else list(reversed(variants)):
                out = one_round(template, work, pages, pause, args.interval_ms / 1000, f"r{r}-{pages}-{pause}")
                results[(pages, pause)].append(out)
                lat = out["lat"]
                log(f"round {r + 1} pages {pages} pause {pause * 1000:g} ms: {out['steps']} steps in "
                    f"{out['wall']:.2f} s; sends {len(lat)} p50 {pct(lat, .5) * 1000:.1f} "
                    f"p99 {pct(lat, .99) * 1000:.1f} max {max(lat) * 1000:.1f} ms")
    print("\n| step (pages) | pause | compaction wall (s) | steps | sends | send p50 | p99 | max | sender CPU/send |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (pages, pause), runs in results.items():
        lat = [x for run in runs for x in run["lat"]]
        walls = ", ".join(f"{run['wall']:.2f}" for run in runs)
        print(f"| {pages} | {pause * 1000:g} ms | {walls} | {runs[0]['steps']} | {len(lat)} | "
              f"{pct(lat, .5) * 1000:.1f} ms | {pct(lat, .99) * 1000:.1f} ms | {max(lat) * 1000:.1f} ms | "
              f"{statistics.mean(run['cpu'] for run in runs) * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
