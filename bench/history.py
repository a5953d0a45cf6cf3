"""History benchmark: ``GET /v1/conversations/{conv}/messages`` against 10k..1M stored messages.

What it does, per database size:

1. Fills a SQLite store through the store's own batch ``append`` (the path the bridge writes by),
   messages interleaved across conversations in time order like a live chat log. The filled file is
   cached (keyed by size and fill version) so reruns skip the fill.
2. Prints SQLite's EXPLAIN QUERY PLAN of the exact statements the store runs for a page (captured
   with a trace callback, not retyped here), and the MongoDB plan (``explain()`` on a real server
   when CHATMQ_TEST_MONGO_URL is set; the expected IXSCAN otherwise: mongomock timings say nothing
   about MongoDB, so none are taken).
3. Serves the file with the real ``chatmq api`` (granian, its default 2 workers) and a
   private Redis (token revocation check per request), and loads it with ``wrk`` in its own process:
   the newest page of 50, then deep ``before=`` pages (random conversation, random cursor).
4. Latency at the client (wrk) and at the server: every request's time from the API's own request
   log (``ms=``, first before_request hook to last after_request hook: auth, validation, queries,
   JSON), cross-checked with the API's Prometheus histogram (share of requests <= 5 ms).

Every size uses the same conversation depth (1,000 messages each, up to 1,000 conversations), so
every page is a full page of 50 and only the table size changes from 10k to 1M.

    .venv/bin/python -m bench.history --quick          # 10k and 100k, well under 2 minutes
    .venv/bin/python -m bench.history                  # 10k, 100k and 1M, ~5-8 minutes on first fill
    .venv/bin/python -m bench.history --json out.json --plot docs/img/history.png

Needs ``wrk`` (Debian: ``apt-get install wrk``; ``scripts/ensure-deps`` installs it as root).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatmq.cli.localredis import LocalRedis
from chatmq.cli.processes import terminate
from chatmq.core.auth import hash_password, issue_token
from chatmq.core.netutil import free_port, wait_for_port
from chatmq.core.store import NewMessage
from chatmq.core.store.sqlite import SQLiteStore

FILL_VERSION = 1  # bump when the fill changes: cached files of another version are not reused
MESSAGES_PER_CONV = 1_000
MAX_CONVS = 1_000
PAGE = 50  # the API's default page
ROUNDS_PER_APPEND = 20  # one message per conversation per round; this many rounds per append call
ROUTE = "/v1/conversations/<conv>/messages"
TARGET_CLIENT_P99_MS = 5.0  # measured at the client (wrk), not at the Flask hooks
TARGET_REQUESTS_PER_S = 4_000
CORES = os.cpu_count() or 1
# The API's workers do not balance keep-alive connections: the worker that wakes first can
# accept all of wrk's connections, and then one core serves everything. A device fleet connects
# over time and spreads out; a benchmark's few connections, opened at once, often do not. A run in
# which one worker did more than this share of the work is discarded and repeated (and counted).
BALANCED_SHARE = 0.7
MAX_ATTEMPTS = 5
SECRET = "bench-history-secret-key-not-for-production-use"
REQUEST_LINE = re.compile(r"route=(\S+) status=(\d+) ms=([\d.]+)")


@dataclass(frozen=True)
class Layout:
    """How many conversations a database of ``total`` messages has, each ``per_conv`` deep."""

    total: int
    convs: int
    per_conv: int

    @classmethod
    def for_total(cls, total: int) -> Layout:
        convs = max(1, min(MAX_CONVS, total // MESSAGES_PER_CONV))
        return cls(total=convs * (total // convs), convs=convs, per_conv=total // convs)


def conv_id(index: int) -> str:
    return f"h{index:04d}"


def members(index: int) -> tuple[str, str]:
    return f"a{index:04d}", f"b{index:04d}"


def log(message: str) -> None:
    print(f"[history {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- fill --------------------------------------------------------------------------------------


def cached_database(cache_dir: Path, layout: Layout) -> Path:
    """The filled database for ``layout``, filling it first unless a complete one is cached."""
    path = cache_dir / f"history-v{FILL_VERSION}-{layout.total}msgs-{layout.convs}convs.db"
    if path.exists():
        log(f"reusing {path} ({path.stat().st_size / 1e6:,.0f} MB)")
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".filling")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    fill(partial, layout)
    partial.rename(path)  # only a complete fill gets the cache name
    return path


def fill(path: Path, layout: Layout) -> None:
    """Users, conversations and messages through the SQLiteStore API the services use."""
    started = time.perf_counter()
    store = SQLiteStore(str(path))
    try:
        password_hash = hash_password("bench-password")  # one hash shared by all: nobody logs in
        for i in range(layout.convs):
            for user in members(i):
                store.create_user(user, password_hash)
            store.create_conversation(conv_id(i), members(i), title=f"bench {i}")
        rng = random.Random(FILL_VERSION)
        bodies = ["".join(rng.choices("abcdefghij klmnopqrstuvwxyz", k=rng.randint(20, 200))) for _ in range(997)]
        first_ts = int(time.time() * 1000) - 30 * 86_400_000  # a month of chat
        written = 0
        next_report = time.perf_counter() + 5
        for first_round in range(0, layout.per_conv, ROUNDS_PER_APPEND):
            rounds = range(first_round, min(layout.per_conv, first_round + ROUNDS_PER_APPEND))
            batch = [
                NewMessage(
                    conv=conv_id(c), sender=members(c)[r % 2], client_msg_id=f"m{r}",
                    body=bodies[(r * layout.convs + c) % len(bodies)], ts=first_ts + r * 2_000 + c,
                )
                for r in rounds
                for c in range(layout.convs)
            ]  # fmt: skip
            store.append(batch)
            written += len(batch)
            if time.perf_counter() >= next_report or written == layout.total:
                rate = written / (time.perf_counter() - started)
                log(f"fill {written:,}/{layout.total:,} messages ({rate:,.0f} msg/s)")
                next_report = time.perf_counter() + 5
    finally:
        store.close()
    log(f"filled {path.name} in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:,.0f} MB)")


# --- query plans -------------------------------------------------------------------------------


class _TracingStore(SQLiteStore):
    """Records every statement its connections run, with the bound values, for EXPLAIN."""

    def __init__(self, path: str) -> None:
        self.statements: list[str] = []
        super().__init__(path)

    def _open(self) -> sqlite3.Connection:
        conn = super()._open()
        conn.set_trace_callback(self.statements.append)
        return conn


def sqlite_query_plans(db: Path, layout: Layout) -> dict[str, dict[str, Any]]:
    """EXPLAIN QUERY PLAN of the statement the store runs for the newest and a deep page."""
    store = _TracingStore(str(db))
    plans: dict[str, dict[str, Any]] = {}
    try:
        for name, before in (("newest", None), ("deep", layout.per_conv // 2)):
            store.statements.clear()
            store.history(conv_id(0), before=before, limit=PAGE)
            statement = next(s for s in store.statements if s.lstrip().upper().startswith("SELECT"))
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            finally:
                conn.close()
            plan = [str(row[-1]) for row in rows]
            plans[name] = {"statement": statement, "plan": plan}
    finally:
        store.close()
    return plans


MONGO_EXPECTED = {
    "query": "find({conv: C, seq: {$lt: B}}).sort({seq: -1}).limit(51)  (newest page: no seq bound)",
    "winning_plan": "LIMIT <- FETCH <- IXSCAN conv_seq {conv: 1, seq: 1}, direction backward, "
    "bounds conv [C, C], seq (B, -inf]",
    "source": "expected (no CHATMQ_TEST_MONGO_URL): the query shape of chatmq/core/store/mongo.py history()",
}


def mongo_query_plan() -> dict[str, Any]:
    """The winning plan of the store's own history query on a real MongoDB, when one is configured."""
    url = os.environ.get("CHATMQ_TEST_MONGO_URL")
    if not url:
        return MONGO_EXPECTED
    from pymongo import MongoClient, monitoring

    from chatmq.core.store.mongo import MongoStore

    class FindCapture(monitoring.CommandListener):
        def __init__(self) -> None:
            self.finds: list[dict[str, Any]] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "find" and event.command.get("find") == "messages":
                self.finds.append(dict(event.command))

        def succeeded(self, event: Any) -> None: ...

        def failed(self, event: Any) -> None: ...

    capture = FindCapture()
    client: MongoClient[Any] = MongoClient(url, event_listeners=[capture])
    db = client.get_database(f"chatmq_bench_history_{os.getpid()}")
    try:
        store = MongoStore(db)
        store.create_user("a", "x")
        store.create_user("b", "x")
        store.create_conversation("c", ["a", "b"])
        store.append([NewMessage("c", "a", f"m{i}", "hi", i) for i in range(200)])
        store.history("c", before=150, limit=PAGE)
        find = capture.finds[-1]
        command = {k: v for k, v in find.items() if k in ("find", "filter", "sort", "limit", "projection")}
        explained = db.command({"explain": command, "verbosity": "queryPlanner"})
        winning = explained["queryPlanner"]["winningPlan"]
        return {"query": repr(command), "winning_plan": json.dumps(winning, default=str), "source": "explain()"}
    finally:
        client.drop_database(db.name)
        client.close()


def store_floor(db: Path, layout: Layout, mode: str, queries: int) -> tuple[float, float]:
    """p50/p99 ms of ``SQLiteStore.history`` alone, in this process: the floor under the HTTP path."""
    store = SQLiteStore(str(db))
    rng = random.Random(7)
    times: list[float] = []
    try:
        for _ in range(queries):
            conv = conv_id(rng.randrange(layout.convs))
            before = rng.randint(PAGE + 1, layout.per_conv) if mode == "deep" else None
            started = time.perf_counter()
            store.history(conv, before=before, limit=PAGE)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return percentile(times, 50), percentile(times, 99)


# --- the API under load ------------------------------------------------------------------------


@contextmanager
def running_api(
    db: Path, redis_url: str, workers: int, workdir: Path, source: Path | None
) -> Iterator[tuple[str, Path, int]]:
    """``chatmq api`` serving ``db``; yields its base URL, the file its log goes to and its pid.
    ``source``: run the API of another source tree (e.g. ``git archive`` of an older commit)."""
    port = free_port()
    data_dir = workdir / f"api-{port}"
    data_dir.mkdir(parents=True)
    log_path = data_dir / "api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
    env.update(
        CHATMQ_DATA_DIR=str(data_dir), CHATMQ_STORE_URL=f"sqlite:///{db}", CHATMQ_REDIS_URL=redis_url,
        CHATMQ_SECRET_KEY=SECRET, CHATMQ_HTTP_PORT=str(port), CHATMQ_LOG_LEVEL="INFO",
    )  # fmt: skip
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    with open(log_path, "wb") as log_file:
        api = subprocess.Popen(
            [sys.executable, "-m", "chatmq.cli", "api", "--workers", str(workers)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=source,
        )  # fmt: skip
        try:
            if not wait_for_port("127.0.0.1", port, 60):
                raise RuntimeError(f"chatmq api did not start; see {log_path}")
            yield f"http://127.0.0.1:{port}", log_path, api.pid
        finally:
            terminate(api, timeout=15, sig=signal.SIGTERM)


def wrk_script(path: Path, layout: Layout, mode: str) -> None:
    """A wrk Lua script: a random conversation per request with its member's token."""
    tokens = [issue_token(SECRET, members(i)[0], 6 * 3600).token for i in range(layout.convs)]
    lua_tokens = ",\n".join(f'"{t}"' for t in tokens)
    path.write_text(
        f"""
local tokens = {{
{lua_tokens}
}}
local convs, per_conv, page, mode = {layout.convs}, {layout.per_conv}, {PAGE}, "{mode}"
math.randomseed({random.randrange(1, 2**31)})
request = function()
  local i = math.random(convs)
  local path = string.format("/v1/conversations/h%04d/messages", i - 1)
  if mode == "deep" then
    path = path .. "?before=" .. math.random(page + 1, per_conv)  -- always a full page of 50
  end
  return wrk.format("GET", path, {{["Authorization"] = "Bearer " .. tokens[i]}})
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
    )


def run_wrk(url: str, script: Path, connections: int, duration_s: float) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return dict(json.loads(line.removeprefix("WRKJSON ")))


def route_histogram(url: str) -> dict[str, float]:
    """Cumulative bucket counts of the history route's 200s from the API's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("route") == ROUTE and labels.get("status") == "200":
                buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + sample.value
    return buckets


def server_times(log_path: Path, offset: int) -> list[float]:
    """Per-request server milliseconds of the history route, logged after ``offset``."""
    times: list[float] = []
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            match = REQUEST_LINE.search(raw.decode(errors="replace"))
            if match and match.group(1) == ROUTE and match.group(2) == "200":
                times.append(float(match.group(3)))
    return times


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of these processes and all their live descendants (the API's workers)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def worker_cpu_seconds(api_pid: int) -> dict[int, float]:
    """CPU seconds of each API worker (the main process's children)."""
    import psutil

    seconds: dict[int, float] = {}
    for worker in psutil.Process(api_pid).children():
        try:
            times = worker.cpu_times()
            seconds[worker.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


def busiest_worker_share(before: dict[int, float], after: dict[int, float]) -> float:
    used = [after[pid] - before[pid] for pid in after if pid in before]
    total = sum(used)
    return max(used) / total if total > 0 else 1.0


def children_cpu_seconds() -> float:
    """CPU of this process's waited-for children (wrk runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


@dataclass
class Result:
    messages: int
    conversations: int
    mode: str
    api: str  # "current", or "baseline" (--baseline-source)
    rounds: int  # measurements this row sums up (the median of each figure)
    round_no: int  # which round (-1: a median over rounds)
    requests: int
    requests_per_s: float
    client_p50_ms: float
    client_p99_ms: float
    server_p50_ms: float
    server_p99_ms: float
    server_mean_ms: float
    server_share_le_5ms: float  # from the Prometheus histogram
    store_p50_ms: float  # SQLiteStore.history alone, no HTTP
    store_p99_ms: float
    api_cpu_ms_per_request: float  # the API's main process + workers
    busiest_worker_share: float  # of the workers' CPU; 1/workers is even
    attempts: int  # runs discarded for imbalance, plus one
    redis_cpu_ms_per_request: float
    wrk_cpu_ms_per_request: float
    errors: int

    @property
    def cpu_ceiling_requests_per_s(self) -> float:
        """Requests/s if API, Redis and wrk had both cores to themselves: load-independent capacity."""
        per_request = self.api_cpu_ms_per_request + self.redis_cpu_ms_per_request + self.wrk_cpu_ms_per_request
        return CORES * 1000 / per_request if per_request > 0 else float("nan")

    @property
    def meets_targets(self) -> bool:
        return (
            self.client_p99_ms <= TARGET_CLIENT_P99_MS
            and self.requests_per_s >= TARGET_REQUESTS_PER_S
            and self.errors == 0
        )


def measure(
    db: Path,
    url: str,
    log_path: Path,
    pids: tuple[int, int],
    layout: Layout,
    mode: str,
    args: argparse.Namespace,
    workdir: Path,
    round_no: int,
    api: str,
) -> Result:
    store_p50, store_p99 = store_floor(db, layout, mode, args.store_queries)
    script = workdir / f"history-{layout.total}-{mode}-{api}.lua"
    if not script.exists():
        wrk_script(script, layout, mode)
        run_wrk(url, script, args.connections, args.warmup)  # workers warm: imports, pools, page cache
    api_pid, redis_pid = pids
    for attempt in range(1, MAX_ATTEMPTS + 1):
        before_hist = route_histogram(url)
        offset = log_path.stat().st_size
        workers_before = worker_cpu_seconds(api_pid)
        cpu_before = (cpu_seconds([api_pid]), cpu_seconds([redis_pid]), children_cpu_seconds())
        stats = run_wrk(url, script, args.connections, args.duration)
        cpu_after = (cpu_seconds([api_pid]), cpu_seconds([redis_pid]), children_cpu_seconds())
        after_hist = route_histogram(url)
        busiest = busiest_worker_share(workers_before, worker_cpu_seconds(api_pid))
        if busiest <= BALANCED_SHARE or attempt == MAX_ATTEMPTS:
            break
        log(f"    discarded: one API worker did {busiest:.0%} of the work (wrk's connections landed on it)")
    requests = max(1, stats["requests"])
    api_cpu, redis_cpu, wrk_cpu = (1000 * (a - b) / requests for a, b in zip(cpu_after, cpu_before, strict=True))
    time.sleep(0.2)  # let the last request lines reach the log file
    times = server_times(log_path, offset)
    counted = after_hist.get("+Inf", 0.0) - before_hist.get("+Inf", 0.0)
    fast = after_hist.get("0.005", 0.0) - before_hist.get("0.005", 0.0)
    return Result(
        messages=layout.total,
        conversations=layout.convs,
        mode=mode,
        api=api,
        rounds=1,
        round_no=round_no,
        requests=stats["requests"],
        requests_per_s=stats["requests"] / (stats["duration_us"] / 1e6),
        client_p50_ms=stats["p50_us"] / 1000,
        client_p99_ms=stats["p99_us"] / 1000,
        server_p50_ms=percentile(times, 50),
        server_p99_ms=percentile(times, 99),
        server_mean_ms=statistics.fmean(times) if times else float("nan"),
        server_share_le_5ms=fast / counted if counted else float("nan"),
        store_p50_ms=store_p50,
        store_p99_ms=store_p99,
        api_cpu_ms_per_request=api_cpu,
        busiest_worker_share=busiest,
        attempts=attempt,
        redis_cpu_ms_per_request=redis_cpu,
        wrk_cpu_ms_per_request=wrk_cpu,
        errors=stats["status_errors"] + stats["socket_errors"],
    )


def median_of(rounds: list[Result]) -> Result:
    """One row for a (size, mode): the median of each figure over the rounds, counts summed."""
    first = asdict(rounds[0])
    medians = {
        name: statistics.median(getattr(r, name) for r in rounds) for name, v in first.items() if isinstance(v, float)
    }
    counts = {
        "rounds": len(rounds),
        "round_no": -1,
        "requests": sum(r.requests for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "attempts": sum(r.attempts for r in rounds),
    }
    return Result(**(first | medians | counts))


# --- report ------------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    header = (
        f"{'api':>8} {'messages':>10} {'convs':>5} {'page':>6} {'store p99':>9} {'req/s':>7}"
        f" {'client p50':>10} {'client p99':>10}"
        f" {'server p50':>10} {'server p99':>10} {'<=5ms':>7} {'API CPU':>9} {'ceiling':>7}"
        f" {'wrk CPU':>9} {'busiest':>7} {'runs':>4} {'errors':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.api:>8} {r.messages:>10,} {r.conversations:>5} {r.mode:>6} {r.store_p99_ms:>7.2f}ms"
            f" {r.requests_per_s:>7,.0f}"
            f" {r.client_p50_ms:>8.2f}ms {r.client_p99_ms:>8.2f}ms {r.server_p50_ms:>8.2f}ms"
            f" {r.server_p99_ms:>8.2f}ms {r.server_share_le_5ms:>7.2%} {r.api_cpu_ms_per_request:>7.2f}ms"
            f" {r.cpu_ceiling_requests_per_s:>7,.0f} {r.wrk_cpu_ms_per_request:>7.3f}ms"
            f" {r.busiest_worker_share:>7.0%} {r.attempts:>4} {r.errors:>6}"
            f"  {'met' if r.meets_targets else 'MISSED'}"
        )
    print(
        f"targets: client p99 <= {TARGET_CLIENT_P99_MS:g} ms (wrk) and >= {TARGET_REQUESTS_PER_S:,} req/s"
        " (server: the API's request log; <=5ms: share in the API's Prometheus histogram;"
        " wrk CPU: the load generator's own CPU per request)"
    )
    print(
        f"busiest: the busiest API worker's share of the workers' CPU; runs: wrk runs made, those with one worker"
        f" above {BALANCED_SHARE:.0%} discarded (the workers do not balance keep-alive connections)"
    )
    print("store p99: SQLiteStore.history() alone in the benchmark process (no HTTP, no auth): the floor")
    print(
        f"API CPU: CPU time of the API per request; ceiling: {CORES} cores / (API + Redis + wrk CPU per request),"
        " the rate this machine could reach with nothing else running"
    )


def plot(results: list[Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, rate, cpu) = plt.subplots(1, 3, figsize=(14, 4.2))
    series = [("current", "newest", "o", "tab:blue"), ("current", "deep", "s", "tab:orange"),
              ("baseline", "newest", "o", "tab:gray"), ("baseline", "deep", "s", "tab:brown")]  # fmt: skip
    for api, mode, marker, color in series:
        rows = sorted((r for r in results if r.mode == mode and r.api == api), key=lambda r: r.messages)
        if not rows:
            continue
        name = mode if api == "current" else f"{api} {mode}"
        sizes = [r.messages for r in rows]
        style = {"marker": marker, "color": color}
        lat.plot(sizes, [r.server_p50_ms for r in rows], **style, label=f"{name}: server p50")
        lat.plot(sizes, [r.server_p99_ms for r in rows], **style, linestyle="--", label=f"{name}: server p99")
        lat.plot(sizes, [r.client_p99_ms for r in rows], **style, linestyle="-.", label=f"{name}: client p99")
        if api == "current":
            lat.plot(sizes, [r.store_p99_ms for r in rows], **style, linestyle=":", label=f"{name}: store alone p99")
        rate.plot(sizes, [r.requests_per_s for r in rows], **style, label=f"{name}: measured")
        rate.plot(
            sizes, [r.cpu_ceiling_requests_per_s for r in rows], **style, linestyle="--",
            label=f"{name}: CPU ceiling",
        )  # fmt: skip
        cpu.plot(sizes, [r.api_cpu_ms_per_request for r in rows], **style, label=f"{name}: API")
    lat.axhline(TARGET_CLIENT_P99_MS, color="red", linewidth=0.8, label="target: client p99")
    rate.axhline(TARGET_REQUESTS_PER_S, color="red", linewidth=0.8, label="target")
    lat.set_title("latency of a page of 50 (median of rounds)")
    lat.set_ylabel("ms")
    rate.set_title("throughput, 2 cores")
    rate.set_ylabel("requests/s")
    cpu.set_title("CPU per request")
    cpu.set_ylabel("ms")
    for ax in (lat, rate, cpu):
        ax.set_xscale("log")
        ax.set_xlabel("messages stored")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    log(f"plot written to {path}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chatmq-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k messages, short runs (< 2 min)")
    parser.add_argument("--sizes", help="comma-separated message counts [default 10000,100000,1000000]")
    parser.add_argument("--duration", type=float, help="seconds of load per measurement [default 8; quick 4]")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load first [default 3; quick 1]")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (2 per worker) [default 4]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of chatmq api [default 2]")
    parser.add_argument("--modes", default="newest,deep", help="newest and/or deep [default both]")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="filled databases [%(default)s]")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; the median is reported [3; quick 1]")
    parser.add_argument("--store-queries", type=int, help="in-process store queries per floor [5000; quick 1000]")
    parser.add_argument(
        "--baseline-source", type=Path,
        help="also serve each size with the API of this source tree, side by side"
        " (e.g. mkdir /tmp/base && git archive HEAD | tar -x -C /tmp/base)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write machine-readable results here")
    parser.add_argument("--plot", type=Path, help="also draw a PNG here (docs/img/history.png is the committed "
                        "figure: redraw it on purpose); none by default")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000,100000" if args.quick else "10000,100000,1000000")).split(",")]
    args.duration = args.duration or (4.0 if args.quick else 8.0)
    args.warmup = args.warmup or (1.0 if args.quick else 3.0)
    args.store_queries = args.store_queries or (1000 if args.quick else 2000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - {"newest", "deep"}:
        parser.error(f"unknown modes: {sorted(unknown)}")
    plot_path = args.plot
    if shutil.which("wrk") is None:
        sys.exit("bench/history.py needs wrk: 'apt-get install wrk' (or scripts/ensure-deps as root)")

    load = os.getloadavg()
    log(
        f"sizes {sizes}, modes {modes}, {args.duration:g} s each, wrk -c{args.connections},"
        f" api --workers {args.workers}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rounds: list[Result] = []
    plans: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chatmq-bench-history-") as tmp, ExitStack() as running:
        workdir = Path(tmp)
        redis_server = LocalRedis(workdir / "redis", persist=False).start()
        running.callback(redis_server.stop)
        served: list[tuple[str, Layout, Path, str, Path, int]] = []
        for size in sizes:
            layout = Layout.for_total(size)
            db = cached_database(args.cache_dir, layout)
            plans[str(layout.total)] = sqlite_query_plans(db, layout)
            for name, entry in plans[str(layout.total)].items():
                log(f"sqlite plan ({name} page): {entry['statement']}")
                for line in entry["plan"]:
                    log(f"    {line}")
            # Every size is served at once (idle until its turn) so the rounds can interleave:
            # a burst of other load on the machine then hits every size alike, not one.
            sources = [("current", None)] + ([("baseline", args.baseline_source)] if args.baseline_source else [])
            for api_name, source in sources:
                api = running_api(db, redis_server.url, args.workers, workdir, source)
                served.append((api_name, layout, db, *running.enter_context(api)))
        assert redis_server.process is not None
        for round_no in range(args.rounds):
            for api_name, layout, db, url, log_path, api_pid in served:
                for mode in modes:
                    pids = (api_pid, redis_server.process.pid)
                    result = measure(db, url, log_path, pids, layout, mode, args, workdir, round_no, api_name)
                    rounds.append(result)
                    log(
                        f"round {round_no + 1}/{args.rounds}, {api_name} API, {layout.total:,} messages, {mode}:"
                        f" {result.requests_per_s:,.0f} req/s,"
                        f" server p50 {result.server_p50_ms:.2f} p99 {result.server_p99_ms:.2f} ms,"
                        f" client p50 {result.client_p50_ms:.2f} p99 {result.client_p99_ms:.2f} ms,"
                        f" CPU {result.api_cpu_ms_per_request:.2f} ms/request in the API"
                        f" (ceiling {result.cpu_ceiling_requests_per_s:,.0f} req/s), errors {result.errors}"
                    )
    mongo = mongo_query_plan()
    log(f"mongodb plan ({mongo['source']}): {mongo['query']}")
    log(f"    {mongo['winning_plan']}")
    log("mongomock is an in-process Python imitation: its timings are not a MongoDB performance figure")

    groups: dict[tuple[str, int, str], list[Result]] = {}
    for r in rounds:
        groups.setdefault((r.api, r.messages, r.mode), []).append(r)
    results = [median_of(group) for group in groups.values()]
    print()
    print_table(results)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if plot_path is not None:
        title = (
            f"chatmq history: GET /v1/conversations/{{conv}}/messages, {when}, chatmq api --workers {args.workers},"
            f" wrk -c{args.connections}, load average {load[0]:.1f} at start"
        )
        plot(results, plot_path, title)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "history",
                    "date": when,
                    "load_average_at_start": load,
                    "settings": {
                        "sizes": sizes,
                        "modes": modes,
                        "duration_s": args.duration,
                        "connections": args.connections,
                        "workers": args.workers,
                        "rounds": args.rounds,
                        "baseline_source": str(args.baseline_source) if args.baseline_source else None,
                    },
                    "targets": {"client_p99_ms": TARGET_CLIENT_P99_MS, "requests_per_s": TARGET_REQUESTS_PER_S},
                    "rounds": [asdict(r) for r in rounds],
                    "results": [
                        asdict(r)
                        | {"meets_targets": r.meets_targets, "cpu_ceiling_requests_per_s": r.cpu_ceiling_requests_per_s}
                        for r in results
                    ],
                    "sqlite_query_plans": plans,
                    "mongodb_query_plan": mongo,
                },
                indent=2,
            )
        )
        log(f"results written to {args.json}")


if __name__ == "__main__":
    main()
