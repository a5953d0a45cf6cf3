"""The history route's CPU in the Flask app alone: no server, no HTTP, no load generator.

``bench/history.py`` measures the whole API under wrk, where a change of 0.01-0.02 ms per request
(2-4%) drowns in what other processes do to a shared machine. This calls the WSGI app the way
``chatmq/api/front.py``'s pool thread does (one PEP 3333 ``environ`` per request, the whole body
joined) on the bench's cached 100k-message database with a private Redis, and reads the process's
own CPU time (``time.process_time``) over batches of requests: the app's CPU per request, without
the server's share (granian and the front, ~0.2 ms, docs/benchmarks.md).

With ``--baseline-source DIR`` (e.g. ``git archive`` of main before a change) the two source trees
run in turns, each batch in a fresh process, so both see the same machine; the minimum is the
steadier figure on a shared machine (the least disturbed batch), the median is given beside it.

    .venv/bin/python -m bench.history_app --baseline-source /tmp/base        # ~1 minute
    .venv/bin/python -m bench.history_app --rounds 8 --mode newest --profile  # + a cProfile of this tree
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZE = 100_000
PAGE = 50


def environ(path: str, query: str, token: str) -> dict[str, Any]:
    """What chatmq/api/front.py hands the app for a bodiless GET (its ``_environ``, as granian fills it)."""
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True,
        "HTTP_HOST": "127.0.0.1:8080", "HTTP_AUTHORIZATION": f"Bearer {token}",
    }  # fmt: skip


def measure_here(job: dict[str, Any]) -> dict[str, Any]:
    """In this process (one source tree, only its ``chatmq`` imported): CPU ms per request of each
    batch. ``job``: the database, Redis, the secret, each conversation's id and member token."""
    from chatmq.api.app import create_app
    from chatmq.core import logs
    from chatmq.core.config import Settings

    mode, batches, per_batch = job["mode"], job["batches"], job["per_batch"]
    os.environ.update(CHATMQ_DATA_DIR=job["workdir"], CHATMQ_STORE_URL=f"sqlite:///{job['db']}",
                      CHATMQ_REDIS_URL=job["redis_url"], CHATMQ_SECRET_KEY=job["secret"], CHATMQ_LOG_LEVEL="INFO")
    logs.configure("INFO", "text")
    # The request log line is formatted and written as in production, to /dev/null instead of a file.
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    app = create_app(Settings())  # type: ignore[call-arg]
    convs: list[tuple[str, str]] = job["convs"]  # (id, a member's token)
    rng = random.Random(7)
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> Any:
        statuses.append(status)
        return None

    def run(count: int) -> None:
        requests = []
        for _ in range(count):
            conv, token = rng.choice(convs)
            query = f"before={rng.randint(PAGE + 1, job['per_conv'])}" if mode == "deep" else ""
            requests.append(environ(f"/v1/conversations/{conv}/messages", query, token))
        for env in requests:
            b"".join(app(env, start_response))

    run(per_batch)  # warm: imports, the store, the revocation subscription, caches
    if not all(s.startswith("200") for s in statuses):
        raise RuntimeError(f"not every warm-up request was answered 200: {sorted(set(statuses))}")
    times = []
    for _ in range(batches):
        started = time.process_time()
        run(per_batch)
        times.append(1000 * (time.process_time() - started) / per_batch)
    result: dict[str, Any] = {"ms_per_request": times}
    if job["profile"]:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run(per_batch)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("HISTORY_APP_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("HISTORY_APP_LINES", "30")))
        result["profile"] = out.getvalue()
    return result


def measure_in(source: Path | None, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One set of batches in a fresh process running ``source``'s chatmq (None: this checkout's).
    The process runs this file by path from an empty directory, so nothing else of either tree
    (``bench`` included) is imported: a baseline needs only its ``chatmq`` package."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())  # ahead of this checkout's editable install
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps({**job, "workdir": str(workdir)}))
    code = f"import runpy, sys; sys.argv = ['child', {str(job_file)!r}]; runpy.run_path({__file__!r}, run_name='child')"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=workdir / "empty", check=True,
                         capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    from bench.history import SECRET, Layout, cached_database, conv_id, default_cache_dir, members
    from chatmq.cli.localredis import LocalRedis
    from chatmq.core.auth import issue_token

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-source", type=Path, help="also measure this source tree, in turns")
    parser.add_argument("--mode", choices=("newest", "deep"), default="deep", help="page [default deep]")
    parser.add_argument("--rounds", type=int, default=5, help="processes per tree, alternating [default 5]")
    parser.add_argument("--batches", type=int, default=3, help="batches per process [default 3]")
    parser.add_argument("--per-batch", type=int, default=1000, help="requests per batch [default 1000]")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of this tree (by own time)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="filled databases [%(default)s]")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    layout = Layout.for_total(SIZE)
    db = cached_database(args.cache_dir, layout)
    convs = [(conv_id(i), issue_token(SECRET, members(i)[0], 6 * 3600).token) for i in range(layout.convs)]
    trees: list[tuple[str, Path | None]] = [("current", None)]
    if args.baseline_source:
        trees.append(("baseline", args.baseline_source))
    load = os.getloadavg()
    print(f"history route in-process, {SIZE:,} messages, {args.mode} pages, {args.rounds} rounds x {args.batches}"
          f" batches x {args.per_batch} requests; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    figures: dict[str, list[float]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="chatmq-bench-history-app-") as tmp:
        workdir = Path(tmp)
        (workdir / "empty").mkdir()
        redis_server = LocalRedis(workdir / "redis", persist=False).start()
        job = {"db": str(db), "redis_url": redis_server.url, "secret": SECRET, "convs": convs,
               "per_conv": layout.per_conv, "mode": args.mode, "batches": args.batches,
               "per_batch": args.per_batch, "profile": False}  # fmt: skip
        try:
            for round_no in range(args.rounds):
                for name, source in trees if round_no % 2 == 0 else list(reversed(trees)):
                    result = measure_in(source, job, workdir)
                    figures[name].extend(result["ms_per_request"])
                    print(f"round {round_no + 1}: {name} {min(result['ms_per_request']):.4f} ms/request", flush=True)
            if args.profile:
                print(measure_in(None, {**job, "profile": True}, workdir)["profile"])
        finally:
            redis_server.stop()
    load = os.getloadavg()
    print(f"\n{'tree':<9} {'min':>8} {'median':>8}   app CPU per request (ms); load average at the end {load[0]:.1f}")
    for name, times in figures.items():
        print(f"{name:<9} {min(times):>8.4f} {statistics.median(times):>8.4f}")
    if len(figures) == 2:
        cur, base = (min(figures[n]) for n in ("current", "baseline"))
        print(f"current - baseline: {cur - base:+.4f} ms ({(cur - base) / base:+.1%}) by the minimum")
    if args.json:
        args.json.write_text(json.dumps({"mode": args.mode, "ms_per_request": figures}, indent=1))


if __name__ == "__main__":
    main()
elif __name__ == "child":  # measure_in's process
    print(json.dumps(measure_here(json.loads(Path(sys.argv[1]).read_text()))))
