"""Where a broker connection's bytes go: tracemalloc and object counts in an in-process broker.

The broker (``chatmq.broker.server.serve``, product configuration: token auth, ACL, persistent
sessions in a private Redis, a temporary SQLite store) runs on this process's event loop with
tracemalloc on; the devices are ``bench/leanmqtt.py`` clients in ``--procs`` forked processes
(forked before tracing starts, so none of their memory is counted), provisioned and subscribed
exactly as in ``bench.connections`` (3 filters each, QoS 1, clean_session=0, keepalive 60 s).

Printed per connection, between a snapshot with no devices and one with all connected and idle:
RSS, traced Python heap, the heap by module (amqtt, asyncio, uvloop, chatmq, ...), the top
allocation sites, and the live objects by type (count and shallow size, ``gc`` containers only).

    .venv/bin/python -m bench.connmem                    # 2,000 devices, under a minute
    .venv/bin/python -m bench.connmem --devices 10000 --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil

from bench.connections import (
    CONV_SIZE,
    SECRET,
    Worker,
    ask_all,
    device_specs,
    layout,
    merged_outcomes,
    progress,
    provision,
    raise_fd_limit,
)
from chatmq.cli.localredis import LocalRedis
from chatmq.core.netutil import free_port


def _module_of(filename: str) -> str:
    """A readable owner for an allocation site: the package a frame's file belongs to."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "chatmq", "lib"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            rest = parts[i + 1 :] if anchor != "chatmq" else parts[i:]
            if anchor == "lib" and rest and rest[0].startswith("python"):
                rest = rest[1:]
            return "/".join(rest) if rest else filename
    return filename


_PLUMBING = (
    "asyncio/",
    "typing.py",
    "dataclasses.py",
    "functools.py",
    "copy.py",
    "_weakrefset.py",
    "<frozen",
    "threading.py",
    "concurrent/",
    "uvloop/",
    "contextlib.py",
    "abc.py",
)


def _owner(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame outside asyncio and the standard library's plumbing: who asked for it."""
    frames = list(traceback)[::-1]  # tracemalloc keeps them oldest first
    for frame in frames:
        module = _module_of(frame.filename)
        if frame.filename == __file__:
            break  # a callback of the event loop itself: name the innermost frame
        if not module.startswith(_PLUMBING):
            return f"{module}:{frame.lineno}"
    return f"(loop) {_module_of(frames[0].filename)}:{frames[0].lineno}"


def _types() -> tuple[collections.Counter[str], collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


async def measure(args: argparse.Namespace, work: Path, redis_url: str) -> dict[str, Any]:
    from chatmq.broker.server import serve
    from chatmq.core.config import Settings

    port = free_port()
    users, convs = layout(args.devices)
    provision("sqlite:///" + str(work / "chatmq.db"), users, convs)
    specs = device_specs(users, convs)
    per = -(-len(specs) // args.procs)
    workers = [Worker(port, specs[i : i + per], 60) for i in range(0, len(specs), per)]  # forked before tracing
    for key in [key for key in os.environ if key.startswith("CHATMQ_")]:
        del os.environ[key]
    os.environ.update(
        CHATMQ_DATA_DIR=str(work / "broker"), CHATMQ_STORE_URL="sqlite:///" + str(work / "chatmq.db"),
        CHATMQ_REDIS_URL=redis_url, CHATMQ_SECRET_KEY=SECRET, CHATMQ_HOST="127.0.0.1",
        CHATMQ_MQTT_PORT=str(port), CHATMQ_WS_PORT=str(free_port()), CHATMQ_LOG_LEVEL="WARNING",
    )  # fmt: skip
    tracemalloc.start(args.frames)
    ready = asyncio.Event()
    broker = asyncio.create_task(serve(Settings(), ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)
        me = psutil.Process()
        gc.collect()
        rss0, before = me.memory_info().rss, tracemalloc.take_snapshot()
        types0 = _types()
        began = time.monotonic()
        replies = await asyncio.to_thread(ask_all, workers, "connect", {"concurrency": 200, "timeout": 600}, 660)
        outcomes = merged_outcomes(replies)
        connected = sum(n for outcome, n in outcomes.items() if outcome in ("subscribed", "resumed"))
        progress(f"{connected:,} devices connected in {time.monotonic() - began:.1f} s: {outcomes}")
        await asyncio.sleep(3.0)
        gc.collect()
        rss1, after = me.memory_info().rss, tracemalloc.take_snapshot()
        types1 = _types()
        return report(args, connected, rss1 - rss0, before, after, types0, types1)
    finally:
        for worker in workers:
            worker.stop()
        broker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await broker
        tracemalloc.stop()


def report(
    args: argparse.Namespace, n: int, rss_delta: int, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
    types0: tuple[collections.Counter[str], collections.Counter[str]],
    types1: tuple[collections.Counter[str], collections.Counter[str]],
) -> dict[str, Any]:  # fmt: skip
    filters = (tracemalloc.Filter(False, tracemalloc.__file__),)
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    stats = after.compare_to(before, "traceback")
    traced = sum(stat.size_diff for stat in stats)
    print(f"\n{n:,} connections: RSS +{rss_delta / n / 1024:.1f} KiB each, traced Python heap "
          f"+{traced / n / 1024:.1f} KiB each\n")  # fmt: skip
    by_file: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    for stat in stats:
        owner = _owner(stat.traceback)
        by_owner[owner] += stat.size_diff
        by_file[owner.rsplit(":", 1)[0]] += stat.size_diff
    print("| owner file (innermost frame outside asyncio/stdlib) | bytes per connection |\n|---|---:|")
    for owner, size in by_file.most_common(args.top):
        if size / n >= 8:
            print(f"| {owner} | {size / n:,.0f} |")
    print("\n| owner line | bytes per connection |\n|---|---:|")
    for owner, size in by_owner.most_common(args.top):
        if size / n >= 8:
            print(f"| {owner} | {size / n:,.0f} |")
    print("\n| allocation site (innermost frame) | bytes per connection | blocks per connection |\n|---|---:|---:|")
    by_line = after.compare_to(before, "lineno")
    for stat in by_line[: args.top]:
        frame = stat.traceback[-1]
        where = f"{_module_of(frame.filename)}:{frame.lineno}"
        print(f"| {where} | {stat.size_diff / n:,.0f} | {stat.count_diff / n:.2f} |")
    counts = types1[0] - types0[0]
    sizes = types1[1] - types0[1]
    print("\n| live object type (gc containers) | per connection | shallow bytes per connection |\n|---|---:|---:|")
    for name, size in sizes.most_common(args.top):
        print(f"| {name} | {counts[name] / n:.2f} | {size / n:,.0f} |")
    return {"connections": n, "rss_kib_per_connection": rss_delta / n / 1024,
            "traced_kib_per_connection": traced / n / 1024}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12, help="traceback depth kept by tracemalloc")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    args.devices -= args.devices % CONV_SIZE
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with tempfile.TemporaryDirectory(prefix="chatmq-connmem-") as tmp:
        redis = LocalRedis(Path(tmp) / "redis", persist=False).start()
        try:
            asyncio.run(measure(args, Path(tmp), redis.url))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
