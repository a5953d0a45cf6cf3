"""The failover proof on a live RabbitMQ cluster (bench/rabbitfaults.py): chatmq's bridge, API and
client-library devices on three nodes, logged in as a deployment logs in: through chatmq's HTTP
auth backend (the API process answers RabbitMQ; no device or bridge user exists in RabbitMQ's
internal database), half the devices over MQTT over WebSocket (rabbitmq_web_mqtt). Under a steady
chat load the node the bridge is connected to is killed -9, then another is stopped cleanly;
devices and the bridge reconnect to the survivors, and the fault harness's checker finds nothing
acked lost, duplicated, reordered or undelivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.rabbitfaults import Options, run
from tests.rabbitmq import leftover_processes, unavailable_reason

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_node_failures_under_load_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"RabbitMQ cannot run here: {reason}")
    outcome = run(Options(nodes=3, cycles=2, rate=20.0, settle_s=120.0, auth="chatmq", ws_share=0.5), tmp_path,
                  log=print)
    report = outcome.report
    assert report.ok, report.as_dict()
    assert report.acked == report.sent > 100
    kill, stop = outcome.cycles
    assert (kill["how"], stop["how"]) == ("kill -9", "rabbitmqctl stop")
    assert kill["bridge_was_there"], "the first fault must hit the bridge's node"
    assert len(outcome.front) == 3  # devices really were spread over (and moved between) the nodes
    assert outcome.auth == "chatmq" and outcome.ws_devices == 3
    assert len(outcome.ws_front) == 3, "WebSocket devices on every node too"
    assert not leftover_processes()
