"""What the notifier's outbox costs the send path: the store's ``append`` of this tree against a
baseline tree (another checkout, e.g. ``git archive main``), interleaved A/B.

The only change push and webhooks make to the path a send takes is in ``Store.append``: one small
outbox row per stored message, in the transaction the bridge commits anyway. This times exactly
that call, as the bridge's writer makes it (batches of the messages queued meanwhile, a durable
commit each), on a fresh SQLite file per round, baseline and this tree taking turns so machine
load hits both alike. Reported per round and as medians: wall time per batch and CPU time per
message (the commit's fsync is wall time, not CPU).

    git archive main | tar -x -C /tmp/baseline
    .venv/bin/python -m bench.append_ab --baseline /tmp/baseline            # 7 rounds each
    .venv/bin/python -m bench.append_ab --baseline /tmp/baseline --batch 1   # one message per commit
    .venv/bin/python -m bench.append_ab --baseline /tmp/baseline --words 20  # bodies of 20 words (search)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROUND = """
import json, sys, time
from chatmq.core.store import open_store
from chatmq.core.store.base import NewMessage
path, batches, size, convs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
words = int(sys.argv[5])
vocabulary = [f"w{i:x}" for i in range(5000)]
store = open_store("sqlite:///" + path)
store.create_user("alice", "h")
for c in range(convs):
    store.create_conversation(f"c{c}", ["alice"])
wall, cpu, n = [], 0.0, 0
for b in range(batches):
    bodies = [" ".join(vocabulary[(n + i) * 7919 * k % 5000] for k in range(1, words + 1)) if words else "x" * 200
              for i in range(size)]
    batch = [NewMessage(f"c{(n + i) % convs}", "alice", f"m{n + i}", bodies[i], 1) for i in range(size)]
    n += size
    t0, c0 = time.perf_counter(), time.process_time()
    store.append(batch)
    wall.append(time.perf_counter() - t0)
    cpu += time.process_time() - c0
store.close()
wall.sort()
print(json.dumps({"batch_ms_p50": wall[len(wall) // 2] * 1000, "batch_ms_p99": wall[int(len(wall) * 0.99)] * 1000,
                  "cpu_us_per_msg": cpu / n * 1e6, "msgs_per_s": n / sum(wall)}))
"""


def one_round(tree: Path, batches: int, size: int, convs: int, words: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run([sys.executable, "-c", ROUND, str(Path(tmp) / "ab.db"), str(batches), str(size),
                              str(convs), str(words)], env=env, cwd=tmp, capture_output=True, text=True,
                             check=True)  # fmt: skip
        return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the tree to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=300, help="appends per round")
    parser.add_argument("--batch", type=int, default=20, help="messages per append (the writer's batch)")
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--words", type=int, default=0,
                        help="words per body (a 5,000-word vocabulary); 0: 200 x's [default]")
    parser.add_argument("--json", type=Path, default=None, help="write every round here")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
    for n in range(args.rounds):
        for name, tree in (("baseline", args.baseline), ("this", here)) if n % 2 == 0 else (
                ("this", here), ("baseline", args.baseline)):  # fmt: skip
            row = one_round(tree, args.batches, args.batch, args.conversations, args.words)
            results[name].append(row)
            print(f"round {n + 1} {name:<8} batch p50 {row['batch_ms_p50']:.2f} ms  p99 {row['batch_ms_p99']:.2f} ms"
                  f"  cpu {row['cpu_us_per_msg']:.1f} us/msg  {row['msgs_per_s']:,.0f} msg/s", flush=True)
    print(f"\nmedians over {args.rounds} interleaved rounds, {args.batch} messages per append:")
    for name, rows in results.items():
        print(f"  {name:<8} batch p50 {statistics.median(r['batch_ms_p50'] for r in rows):.2f} ms"
              f"  cpu {statistics.median(r['cpu_us_per_msg'] for r in rows):.1f} us/msg"
              f"  {statistics.median(r['msgs_per_s'] for r in rows):,.0f} msg/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
