"""Failover on a RabbitMQ cluster: chatmq's bridge, API and devices on RabbitMQ nodes; nodes die.

Starts ``--nodes`` private RabbitMQ nodes joined into one cluster (bench/rabbitmq.py), a TCP front
that spreads connections over the live nodes as a load balancer would (bench/tcpfront.py), then
Redis, the bridge and the API as separate processes with the cluster as their broker
(bench/cluster.py) and client-library devices sending a steady chat load (bench/faultload.py).
Every cycle takes one node down under that load — a clean ``rabbitmqctl stop`` and a ``kill -9``
of the whole node in turn, the first cycle hitting the node the bridge is connected to — keeps the
load running on the survivors, then starts the node again and waits until it is back in the
cluster. Devices and the bridge reconnect through the front to a live node; the bridge's session
is a quorum queue (``mqtt.durable_queue_type = quorum``) so the sends queued for it survive the
node it was on. Afterwards: every send acked, every member handed every message, and the fault
harness's checker (bench/faultcheck.py) compares acks and deliveries with the stored history.
Exit status 0 only if nothing acked was lost, duplicated, reordered, left unacked or undelivered.

Logins: ``--auth internal`` gives every device user, and ``@bridge`` with the service password, a
user in RabbitMQ's internal database; ``--auth chatmq`` runs as a deployment does: the nodes ask the
API (the API process of the run) through rabbitmq_auth_backend_http with the configuration
``chatmq rabbitmq-config`` renders (auth backends, quorum sessions, ``mqtt.prefetch``), devices log
in with their chatmq passwords and the bridge with a service token it signs. ``--ws-share`` puts
that share of the devices on MQTT over WebSocket (rabbitmq_web_mqtt, ``/ws``) through a second front.

    .venv/bin/python -m bench.rabbitfaults --nodes 3 --cycles 2
    .venv/bin/python -m bench.rabbitfaults --nodes 3 --cycles 4 --auth chatmq --ws-share 0.5
    .venv/bin/python -m bench.rabbitfaults --nodes 3 --cycles 4 --rate 40 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster import Cluster
from bench.faultcheck import Report, check, read_history
from bench.faultload import PASSWORD, Load, plan, provision
from bench.rabbitmq import RabbitCluster, RabbitNode
from bench.tcpfront import TcpFront
from chatmq.adapters.rabbitmq.config import auth_lines, mqtt_lines
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port

SERVICE_USER = "@bridge"
SERVICE_PASSWORD = "fault-harness-service-password"
BRIDGE_CLIENT_ID = "chatmq-bridge"
HOOK_SECRET = "fault-harness-rabbitmq-hook-secret"
AUTH_MODES = ("internal", "chatmq")


@dataclass
class Options:
    nodes: int = 3
    cycles: int = 2
    users: int = 6
    convs: int = 4
    members: int = 3
    rate: float = 20.0  # sends per second, all devices together
    down_s: tuple[float, float] = (2.0, 4.0)  # load on the survivors before the node is started again
    up_s: tuple[float, float] = (2.0, 4.0)  # load on the whole cluster between faults
    settle_s: float = 90.0
    seed: int = 1
    auth: str = "internal"  # "chatmq": RabbitMQ asks chatmq's API (rabbitmq_auth_backend_http)
    ws_share: float = 0.0  # share of the devices on MQTT over WebSocket


@dataclass
class Outcome:
    cycles: list[dict[str, Any]]
    seconds: float
    report: Report
    front: dict[str, int] = field(default_factory=dict)  # connections the front sent to each node
    ws_front: dict[str, int] = field(default_factory=dict)  # the same for MQTT over WebSocket
    auth: str = "internal"
    ws_devices: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"auth": self.auth, "ws_devices": self.ws_devices, "cycles": self.cycles,
                "seconds": round(self.seconds, 1), "front_connections": self.front,
                "ws_front_connections": self.ws_front, "check": self.report.as_dict()}


def bridge_node(rabbit: RabbitCluster) -> RabbitNode | None:
    """The node the bridge's MQTT connection is on (asked of any running node)."""
    for asker in rabbit.nodes:
        if not asker.running:
            continue
        try:
            rows = asker.ctl("list_mqtt_connections", "-q", "--no-table-headers", "client_id", "connection")
        except RuntimeError:
            continue
        for line in rows.splitlines():
            client_id, _, pid = line.partition("\t")  # pid: <name@host.N.N.N>, on the connection's node
            if client_id == BRIDGE_CLIENT_ID:
                return next((n for n in rabbit.nodes if pid.startswith(f"<{n.node}.")), None)
    return None


def run(options: Options, data_dir: Path, log: Any = print) -> Outcome:
    if options.auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {AUTH_MODES}, not {options.auth!r}")
    rng = random.Random(options.seed)
    conversations = plan(options.users, options.convs, options.members)
    users = sorted({m for ms in conversations.values() for m in ms})
    ws_users = frozenset(users[: round(len(users) * options.ws_share)])
    started = time.monotonic()
    cycles: list[dict[str, Any]] = []
    front_port, ws_front_port = free_port(), free_port()  # the fronts start once the nodes have ports
    # The API's port is known before anything starts, so the nodes' config can name it.
    env = {"CHATMQ_BROKER_HOST": "127.0.0.1", "CHATMQ_BRIDGE_CLIENT_ID": BRIDGE_CLIENT_ID}
    if options.auth == "chatmq":
        env["CHATMQ_RABBITMQ_HOOK_SECRET"] = HOOK_SECRET  # the API answers RabbitMQ; the bridge signs a token
    else:
        env["CHATMQ_SERVICE_PASSWORD"] = SERVICE_PASSWORD
    cluster = Cluster(data_dir, mqtt_port=front_port, own_broker=False, extra_env=env)
    rabbit = RabbitCluster(size=options.nodes, extra_config=_node_config(options.auth, data_dir, cluster.api_url))
    front: TcpFront | None = None
    ws_front: TcpFront | None = None
    load: Load | None = None
    try:
        log(f"starting {options.nodes} RabbitMQ nodes (logins: {options.auth})")
        rabbit.start()
        if options.auth == "internal":
            for user in users:
                rabbit.nodes[0].add_user(user, PASSWORD)
            rabbit.nodes[0].add_user(SERVICE_USER, SERVICE_PASSWORD)
        front = TcpFront([(n.host, n.mqtt_port) for n in rabbit.nodes], port=front_port).start()
        ws_front = TcpFront([(n.host, n.ws_port) for n in rabbit.nodes], port=ws_front_port).start()
        provision(cluster.store_url, conversations)
        cluster.start()
        load = Load(front.port, cluster.api_url, data_dir / "devices", conversations, options.rate,
                    seed=options.seed, ws_port=ws_front.port, ws_path="/ws", ws_users=ws_users).start()
        log(f"load running at {options.rate}/s over {len(users)} devices, {len(ws_users)} of them over WebSocket "
            f"({time.monotonic() - started:.0f} s)")
        time.sleep(rng.uniform(*options.up_s))
        for n in range(options.cycles):
            victim = (bridge_node(rabbit) if n == 0 else None) or rabbit.nodes[n % len(rabbit.nodes)]
            how = "kill -9" if n % 2 == 0 else "rabbitmqctl stop"
            had_bridge = bridge_node(rabbit) is victim
            t0 = time.monotonic()
            if how == "kill -9":
                victim.kill()
            else:
                victim.stop()
            time.sleep(rng.uniform(*options.down_s))
            victim.start()
            rabbit.wait_members(rabbit.nodes)
            back = time.monotonic() - t0
            cluster.wait_healthy(60)
            time.sleep(rng.uniform(*options.up_s))
            with load.record.lock:
                sent, acked = len(load.record.sent), len(load.record.acks)
            cycles.append({"node": victim.name, "how": how, "bridge_was_there": had_bridge,
                           "down_to_back_s": round(back, 1), "sent": sent, "acked": acked})
            log(f"cycle {n + 1}: {how} {victim.node} (bridge there: {had_bridge}), back in {back:.0f} s; "
                f"sent {sent} acked {acked} ({time.monotonic() - started:.0f} s)")
        load.stop_sending()
        drained = load.drain(options.settle_s)
        history = read_history(cluster.store_url, list(conversations))
        delivered = load.wait_delivered({c: len(m) for c, m in history.items()}, options.settle_s)
        if not (drained and delivered):
            log(f"settle timed out: drained={drained} delivered={delivered}")
        report = check(load.record, history, conversations)
    finally:
        if load is not None:
            load.close()
        cluster.stop()
        for started_front in (front, ws_front):
            if started_front is not None:
                started_front.stop()
        rabbit.stop()
    return Outcome(cycles, time.monotonic() - started, report, _chosen(front), _chosen(ws_front), options.auth,
                   len(ws_users))


def _node_config(auth: str, data_dir: Path, api_url: str) -> str:
    """What the nodes add to their config: with chatmq's auth, what `chatmq rabbitmq-config` renders."""
    if auth == "internal":
        return ""
    settings = Settings(data_dir=data_dir, rabbitmq_hook_secret=HOOK_SECRET)
    return "\n".join([*auth_lines(settings, api_url), *mqtt_lines(settings)]) + "\n"


def _chosen(front: TcpFront | None) -> dict[str, int]:
    return {f"{host}:{port}": count for (host, port), count in (front.chosen.items() if front else [])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="RabbitMQ nodes in the cluster (2 or 3)")
    parser.add_argument("--cycles", type=int, default=2, help="node faults, alternating kill -9 and stop")
    parser.add_argument("--rate", type=float, default=20.0, help="sends per second in total")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--convs", type=int, default=4)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--settle-seconds", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--auth", choices=AUTH_MODES, default="internal",
                        help="logins: RabbitMQ's internal users, or chatmq's API through rabbitmq_auth_backend_http")
    parser.add_argument("--ws-share", type=float, default=0.0, help="share of the devices on MQTT over WebSocket")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep state and logs here (default: temp)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    args = parser.parse_args(argv)
    options = Options(nodes=args.nodes, cycles=args.cycles, users=args.users, convs=args.convs,
                      members=args.members, rate=args.rate, settle_s=args.settle_seconds, seed=args.seed,
                      auth=args.auth, ws_share=args.ws_share)
    log = (lambda *_: None) if args.json else print
    if args.data_dir is not None:
        outcome = run(options, args.data_dir, log)
    else:
        with tempfile.TemporaryDirectory(prefix="chatmq-rabbitfaults-") as tmp:
            outcome = run(options, Path(tmp), log)
    print(json.dumps(outcome.as_dict(), indent=None if args.json else 2))
    if not args.json:
        print("PASS" if outcome.report.ok else "FAIL")
    return 0 if outcome.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
