"""Search benchmark: ``Store.search`` (SQLite FTS5) at 1M stored messages, against a scan baseline.

What it does:

1. Fills a SQLite store through the store's own batch ``append`` (the bridge's write path, so the
   search index is written as in production): 10,000 users, 5,000 conversations of 40 members
   (each user in ~20 conversations), 200 messages each, in time order across conversations; words
   drawn from a 30,000-word vocabulary with Zipf frequencies (a few words are in a large share of
   all messages, most are rare), 3-25 words per message. The file is cached (keyed by size and
   fill version); the fill rate is reported (it includes indexing).
2. Runs the same random queries, interleaved, through ``Store.search`` and through the baseline at
   its best: a membership-first scan (the caller's conversations' messages, read by the primary
   key, matched with ``instr`` on the stored body, newest first), which is what a store without a
   text index would do. Query kinds: a very common word, a mid-frequency word, a rare word, two
   words, a common word within one conversation, and the second page (cursor) of a common word.
3. Reports p50/p99/max of each kind's service time (queries run one after another in one thread:
   each is timed from its own start, there is no queue for a schedule to omit) and the CPU time
   of the process per query.

    .venv/bin/python -m bench.search                  # 1M messages (first fill ~10 min), then ~1 min
    .venv/bin/python -m bench.search --messages 100000 --queries 100
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from chatmq.core.search import SearchQuery, parse_query
from chatmq.core.store import NewMessage
from chatmq.core.store.base import NewUser
from chatmq.core.store.sqlite import SQLiteStore

FILL_VERSION = 1
USERS = 10_000
MEMBERS = 40
PER_CONV = 200
VOCABULARY = 30_000
BATCH = 500  # messages per append (the bridge's batches are up to a few hundred)


def log(message: str) -> None:
    print(f"[search {time.strftime('%H:%M:%S')}] {message}", flush=True)


def word(rank: int) -> str:
    """A pronounceable word per vocabulary rank (rank 0 is the most frequent)."""
    syllables = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu")
    out, n = [], rank + 1
    while n:
        n, r = divmod(n, len(syllables))
        out.append(syllables[r])
    return "".join(out)


def zipf_weights(size: int) -> list[float]:
    return [1 / (rank + 1) for rank in range(size)]


def conv_id(index: int) -> str:
    return f"s{index:05d}"


def fill(path: Path, messages: int) -> None:
    started = time.perf_counter()
    convs = max(1, messages // PER_CONV)
    rng = random.Random(FILL_VERSION)
    store = SQLiteStore(str(path))
    try:
        store.create_users([NewUser(f"u{i:05d}") for i in range(USERS)])
        for c in range(convs):
            store.create_conversation(conv_id(c), [f"u{rng.randrange(USERS):05d}" for _ in range(MEMBERS)])
        log(f"{USERS:,} users, {convs:,} conversations in {time.perf_counter() - started:.0f} s")
        members = store.memberships()
        vocabulary = [word(r) for r in range(VOCABULARY)]
        cumulative = list(_cumulative(zipf_weights(VOCABULARY)))
        first_ts = int(time.time() * 1000) - 30 * 86_400_000
        written, report, filling = 0, time.perf_counter() + 10, time.perf_counter()
        while written < messages:
            batch = []
            for _ in range(min(BATCH, messages - written)):
                c = rng.randrange(convs)
                body = " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(3, 25)))
                sender = rng.choice(sorted(members[conv_id(c)]))
                batch.append(NewMessage(conv_id(c), sender, f"m{written}", body, first_ts + written * 2))
                written += 1
            store.append(batch)
            if time.perf_counter() >= report:
                rate = written / (time.perf_counter() - filling)
                log(f"fill {written:,}/{messages:,} ({rate:,.0f} msg/s with the index)")
                report = time.perf_counter() + 10
        log(f"filled {messages:,} messages at {messages / (time.perf_counter() - filling):,.0f} msg/s "
            f"({path.stat().st_size / 1e6:,.0f} MB)")  # fmt: skip
    finally:
        store.close()


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def cached_database(cache_dir: Path, messages: int) -> Path:
    path = cache_dir / f"search-v{FILL_VERSION}-{messages}msgs.db"
    if path.exists():
        log(f"reusing {path} ({path.stat().st_size / 1e6:,.0f} MB)")
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".filling")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    fill(partial, messages)
    partial.rename(path)
    return path


class ScanBaseline:
    """Search without a text index, at its best: the caller's conversations' messages through the
    primary key, matched on the stored body as whole words (edits folded in), newest first."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)

    def search(self, user: str, query: SearchQuery) -> int:
        # whole words: the fill's bodies are words separated by single spaces
        where = " AND ".join("instr(' ' || lower(coalesce(s.body, m.body)) || ' ', ?) > 0" for _ in query.words)
        convs = "m.conv = ?" if query.conv else "m.conv IN (SELECT conv FROM members WHERE user = ?)"
        rows = self.conn.execute(
            "SELECT m.conv, m.seq FROM messages m LEFT JOIN message_state s ON s.conv = m.conv AND s.seq = m.seq"
            f" WHERE {convs} AND m.kind IS NULL AND m.erased = 0 AND {where} ORDER BY m.ts DESC LIMIT ?",
            (query.conv or user, *(f" {w} " for w in query.words), query.limit + 1),
        ).fetchall()
        return len(rows)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="stored messages [%(default)s]")
    parser.add_argument("--queries", type=int, default=300, help="queries per kind and contender [%(default)s]")
    parser.add_argument("--limit", type=int, default=20, help="page size [%(default)s]")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "chatmq-bench", help="filled databases [%(default)s]")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="only the index")
    args = parser.parse_args()
    db = cached_database(args.cache_dir, args.messages)
    logging.basicConfig(level=logging.INFO, format="[search %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    opened = time.perf_counter()
    store = SQLiteStore(str(db))  # a file of an older schema gets its index built here, with progress
    log(f"opened in {time.perf_counter() - opened:.1f} s")
    baseline = ScanBaseline(db)
    rng = random.Random(7)
    memberships = store.memberships()
    users = sorted({u for members in memberships.values() for u in members})
    convs_of: dict[str, list[str]] = {}
    for conv, members in memberships.items():
        for user in members:
            convs_of.setdefault(user, []).append(conv)
    log(f"load average {os.getloadavg()[0]:.2f}; {len(users):,} users, "
        f"{statistics.mean(len(v) for v in convs_of.values()):.1f} conversations per user")  # fmt: skip

    def kinds() -> dict[str, Callable[[str], SearchQuery]]:
        return {
            "common word": lambda u: SearchQuery((word(rng.randrange(3)),), limit=args.limit),
            "mid word": lambda u: SearchQuery((word(rng.randrange(100, 1000)),), limit=args.limit),
            "rare word": lambda u: SearchQuery((word(rng.randrange(10_000, VOCABULARY)),), limit=args.limit),
            "two words": lambda u: SearchQuery(parse_query(f"{word(rng.randrange(10, 100))} "
                                                           f"{word(rng.randrange(10, 100))}"), limit=args.limit),
            "common, one conv": lambda u: SearchQuery((word(rng.randrange(3)),), conv=rng.choice(convs_of[u]),
                                                      limit=args.limit),
        }  # fmt: skip

    contenders: dict[str, Callable[[str, SearchQuery], int]] = {
        "fts5 index": lambda u, q: len(store.search(u, q).messages),
    }
    if not args.no_baseline:
        contenders["scan baseline"] = baseline.search
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[str, float] = dict.fromkeys(contenders, 0.0)
    hits: dict[tuple[str, str], int] = {}
    for _ in range(args.queries):
        for kind, make in kinds().items():
            user = rng.choice(users)
            query = make(user)
            for name, run in contenders.items():  # interleaved: the same query, one after the other
                c0, t0 = time.process_time(), time.perf_counter()
                found = run(user, query)
                times.setdefault((name, kind), []).append((time.perf_counter() - t0) * 1000)
                cpu[name] += time.process_time() - c0
                hits[(name, kind)] = hits.get((name, kind), 0) + min(found, args.limit)
        user = rng.choice(users)  # the second page of a common word (the index's cursor)
        first = store.search(user, SearchQuery((word(0),), limit=args.limit))
        if first.next:
            t0 = time.perf_counter()
            store.search(user, SearchQuery((word(0),), before=first.next, limit=args.limit))
            times.setdefault(("fts5 index", "common, page 2"), []).append((time.perf_counter() - t0) * 1000)
    print(f"\nSearch at {args.messages:,} messages, page of {args.limit}, {args.queries} queries per kind")
    print(f"{'contender':<14} {'query':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'hits/q':>7}")
    for (name, kind), values in times.items():
        mean_hits = hits.get((name, kind), 0) / len(values) if (name, kind) in hits else float("nan")
        print(f"{name:<14} {kind:<18} {statistics.median(values):8.2f} {percentile(values, 99):8.2f} "
              f"{max(values):8.2f} {mean_hits:7.1f}")  # fmt: skip
    for name, seconds in cpu.items():
        count = sum(len(v) for (n, k), v in times.items() if n == name and k != "common, page 2")
        print(f"{name}: {seconds / count * 1000:.2f} ms CPU per query (this process is the load generator too)")
    store.close()


if __name__ == "__main__":
    main()
