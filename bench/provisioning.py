"""Bulk provisioning: how long creating 10,000 users takes, against one `chatmq user add` per user.

    .venv/bin/python -m bench.provisioning [--users 10000] [--baseline 30]

Runs a real `chatmq up` (private Redis, free ports) and times, as an operator would see them:
- `chatmq user import` of USERS rows in remote mode (--server, the admin HTTP API), then the same
  file again (idempotent: nothing new), and in local mode on a fresh store; half the rows carry a
  pre-hashed argon2 password, half none (identity provider logins);
- the same import with plain passwords, hashed by the importing CLI (--hash-workers = cores), on
  a smaller sample, as per-user cost;
- the baseline: `chatmq user add` once per user (a process start and an argon2 hash each), on
  BASELINE users, as per-user cost.
It prints one JSON object; each timing is the median of --rounds runs, interleaved. The CPU time of
the CLI processes (the load generator) is reported beside the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from chatmq.cli.localredis import LocalRedis
from chatmq.core.auth import hash_password
from chatmq.core.netutil import free_port

CLI = [sys.executable, "-m", "chatmq.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command, stdout)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    result = subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=1800)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if result.returncode not in (0, 1):
        raise RuntimeError(f"chatmq {' '.join(args)} failed: {result.stderr[-2000:]}")
    return wall, cpu, result.stdout


def write_users(path: Path, prefix: str, count: int, *, plain: bool = False) -> None:
    hashed = hash_password("provisioned")
    with path.open("w") as out:
        for n in range(count):
            row: dict[str, Any] = {"id": f"{prefix}{n:06d}", "display_name": f"User {n}"}
            if plain:
                row["password"] = f"pw-{n}"
            elif n % 2:
                row["password_hash"] = hashed
            out.write(json.dumps(row) + "\n")


class Stack:
    def __init__(self, work: Path, redis_url: str) -> None:
        self.http_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        self.env.update(CHATMQ_DATA_DIR=str(work / "data"), CHATMQ_SECRET_KEY="bench-provisioning-key-" + "x" * 24)
        command = [*CLI, "up", "--mqtt-port", str(free_port()), "--ws-port", str(free_port()),
                   "--http-port", str(self.http_port), "--redis-url", redis_url]
        self.log = (work / "up.log").open("wb")
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the stack did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=30, help="users created one `chatmq user add` each")
    parser.add_argument("--plain", type=int, default=200, help="users imported with plain passwords")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chatmq-bench-provisioning-"))
    redis_server = LocalRedis(work / "redis", persist=False).start()
    stack = Stack(work, redis_server.url)
    try:
        token = timed(["token", "issue", "--admin"], stack.env)[2].strip()
        remote_env = {**stack.env, "CHATMQ_SERVER": stack.url, "CHATMQ_ADMIN_TOKEN": token}
        figures: dict[str, list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):  # interleaved: each round runs every variant once
            users = work / f"users-{round_no}.jsonl"
            write_users(users, f"r{round_no}u", args.users)
            wall, cpu, out = timed(["user", "import", str(users)], remote_env)
            assert f"{args.users} created" in out, out
            figures.setdefault("remote import", []).append((wall, cpu))
            wall, cpu, out = timed(["user", "import", str(users)], remote_env)
            assert "0 created" in out, out
            figures.setdefault("remote re-run (nothing new)", []).append((wall, cpu))
            local_env = {**stack.env, "CHATMQ_DATA_DIR": str(work / f"local-{round_no}")}
            wall, cpu, out = timed(["user", "import", str(users)], local_env)
            assert f"{args.users} created" in out, out
            figures.setdefault("local import (fresh SQLite)", []).append((wall, cpu))
            plain = work / f"plain-{round_no}.jsonl"
            write_users(plain, f"r{round_no}p", args.plain, plain=True)
            wall, cpu, out = timed(["user", "import", str(plain)], remote_env)
            assert f"{args.plain} created" in out, out
            figures.setdefault(f"remote import, plain passwords (per {args.plain})", []).append((wall, cpu))
            started, cpu0 = time.perf_counter(), _children_cpu()
            for n in range(args.baseline):
                timed(["user", "add", f"r{round_no}b{n}", "--password-stdin"], stack.env, stdin="pw\n")
            figures.setdefault(f"baseline: user add x{args.baseline}", []).append(
                (time.perf_counter() - started, _children_cpu() - cpu0))
        result: dict[str, Any] = {"users": args.users, "rounds": args.rounds, "cores": os.cpu_count()}
        for name, samples in figures.items():
            result[name] = {"wall_s": round(statistics.median(w for w, _ in samples), 2),
                            "cli_cpu_s": round(statistics.median(c for _, c in samples), 2)}
        per_user_baseline = result[f"baseline: user add x{args.baseline}"]["wall_s"] / args.baseline
        per_user_plain = result[f"remote import, plain passwords (per {args.plain})"]["wall_s"] / args.plain
        result["baseline per user s"] = round(per_user_baseline, 3)
        result["baseline extrapolated to USERS s"] = round(per_user_baseline * args.users, 1)
        result["plain-password import per user s"] = round(per_user_plain, 4)
        print(json.dumps(result, indent=2))
    finally:
        stack.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
