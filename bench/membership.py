"""Membership view benchmark: what one membership change costs every bridge, API and broker process.

Each of them keeps all memberships in memory (``chatmq.core.membership.MembershipView``) and polls the
store's membership version every 0.5 s. This fills a SQLite store with N conversations of 3
members (N users, members drawn at random), then times, through the real store:

- the full load (``store.memberships()`` and building the view), what a process does at start and
  what every change cost before the view followed the change log;
- the catch-up after one membership change and after 100 (``refresh()``: the version poll, the
  change log, the changed conversations' member sets, applied in place);
- the view's resident memory (peak RSS before and after the full load).

    .venv/bin/python -m bench.membership                          # 100,000 and 1,000,000 conversations
    .venv/bin/python -m bench.membership --conversations 100000   # one size
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from chatmq.core.membership import MembershipView
from chatmq.core.store.sqlite import SQLiteStore

MEMBERS = 3


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def fill(store: SQLiteStore, conversations: int) -> None:
    """Rows written directly, in a few big transactions: the store API would fsync per conversation."""
    rnd = random.Random(1)
    users = [f"u{i:07d}" for i in range(conversations)]
    with store._connection() as conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO users (id, password_hash, created_at) VALUES (?, 'x', 0)",
                         ((u,) for u in users))  # fmt: skip
        conn.executemany("INSERT INTO conversations (id, created_at) VALUES (?, 0)",
                         ((f"c{i:07d}",) for i in range(conversations)))  # fmt: skip
        conn.executemany(
            "INSERT OR IGNORE INTO members (conv, user) VALUES (?, ?)",
            ((f"c{i:07d}", rnd.choice(users)) for i in range(conversations) for _ in range(MEMBERS)),
        )
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'membership_version'")
        conn.execute("COMMIT")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(conversations: int, work: Path) -> dict[str, float]:
    store = SQLiteStore(str(work / f"members-{conversations}.db"))
    began = time.perf_counter()
    fill(store, conversations)
    progress(f"{conversations:,} conversations of {MEMBERS} filled in {time.perf_counter() - began:.1f} s")
    rss_before = peak_rss_mib()
    view = MembershipView(store)
    began = time.perf_counter()
    view.refresh()
    full_s = time.perf_counter() - began
    result = {"conversations": conversations, "full_load_s": full_s, "view_peak_rss_mib": peak_rss_mib() - rss_before}
    rnd = random.Random(2)
    for changes in (1, 100):
        for _ in range(changes):
            store.add_member(f"c{rnd.randrange(conversations):07d}", f"u{rnd.randrange(conversations):07d}")
        began = time.perf_counter()
        assert view.refresh()
        result[f"catch_up_{changes}_s"] = time.perf_counter() - began
    began = time.perf_counter()
    view.refresh()  # nothing changed: the poll alone
    result["poll_s"] = time.perf_counter() - began
    progress(
        f"{conversations:,} conversations: full load {full_s:.2f} s (+{result['view_peak_rss_mib']:.0f} MiB peak RSS);"
        f" catch-up after 1 change {1000 * result['catch_up_1_s']:.2f} ms, after 100 changes"
        f" {1000 * result['catch_up_100_s']:.2f} ms; poll with no change {1000 * result['poll_s']:.3f} ms"
    )
    store.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, action="append", help="size (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = args.conversations or [100_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="chatmq-membership-") as tmp:
        results = [measure(size, Path(tmp)) for size in sizes]
    print()
    print("| conversations | full load | view peak RSS | catch-up, 1 change | catch-up, 100 changes | poll |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['conversations']:,} | {r['full_load_s']:.2f} s | {r['view_peak_rss_mib']:.0f} MiB "
              f"| {1000 * r['catch_up_1_s']:.2f} ms | {1000 * r['catch_up_100_s']:.2f} ms "
              f"| {1000 * r['poll_s']:.3f} ms |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
