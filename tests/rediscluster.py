"""A real 3-master Redis Cluster on loopback, started from the redis-server binary (no replicas)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from chatmq.cli.processes import terminate
from chatmq.core.netutil import free_port, wait_for_port

SLOTS = 16384


class LocalRedisCluster:
    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir.resolve()
        self.ports = [free_port() for _ in range(masters)]
        self.bus_ports = [free_port() for _ in range(masters)]  # default port+10000 may exceed 65535
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 20.0) -> LocalRedisCluster:
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            node_dir = self.workdir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                 "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                 "--cluster-config-file", "nodes.conf", "--save", "",
                 "--appendonly", "no", "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port in self.ports:
            if not wait_for_port("127.0.0.1", port, timeout):
                self.stop()
                raise RuntimeError(f"cluster node on {port} did not start")
        # Split the slots evenly, then introduce the nodes to each other.
        clients = [redis.Redis(port=port) for port in self.ports]
        share = SLOTS // len(self.ports)
        for index, client in enumerate(clients):
            last = SLOTS if index == len(clients) - 1 else (index + 1) * share
            client.execute_command("CLUSTER ADDSLOTSRANGE", index * share, last - 1)
        for client in clients[1:]:
            client.execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0], self.bus_ports[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [c.execute_command("CLUSTER INFO") for c in clients]
            if all(_info(s).get("cluster_state") == "ok" and _info(s).get("cluster_known_nodes") == str(len(clients))
                   for s in states):
                for client in clients:
                    client.close()
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("redis cluster did not reach state ok")

    def stop(self) -> None:
        for process in self.processes:
            terminate(process)


def _info(raw: bytes | str | dict[str, str]) -> dict[str, str]:
    if isinstance(raw, dict):
        return {k: str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else raw
    return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)
