"""A send the server never acks is an application-visible error after ``ack_timeout``, and is still
never lost: the client library reports it once (``on_ack_timeout``, an ``AckTimeout``) while it
keeps resending it with the same client_msg_id, across a reconnect, until the bridge is back and
stores it once.

Real processes (bench/cluster.py): Redis, the broker, the bridge and the API, each killed -9 and
started again by the test. Before, the library only ever resent: nothing told the application that
a send had been waiting for a minute (the terminal client kept its own 5-s timer).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster import Cluster
from bench.faultload import PASSWORD, provision
from chatmq.clients import AckTimeout, ChatClient, HistoryClient

pytestmark = pytest.mark.timeout(150)

ACK_TIMEOUT_S = 1.5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "data")
    running.data_dir.mkdir(parents=True)
    provision(running.store_url, {"room": ["ann", "ben"]})
    try:
        yield running.start()
    finally:
        running.stop()


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_an_unacked_send_is_reported_once_then_resent_across_a_reconnect_and_stored_once(cluster: Cluster) -> None:
    client = ChatClient("127.0.0.1", cluster.mqtt_port, "ann", PASSWORD, device="phone", api_url=cluster.api_url,
                        ack_timeout=ACK_TIMEOUT_S, resend_after=0.5, reconnect_delay=(0.1, 0.5))
    reports: list[AckTimeout] = []
    client.on_ack_timeout(reports.append)
    client.connect()
    try:
        assert client.send("room", "before").result(10).seq == 1
        assert reports == []  # acked in time: nothing to report

        cluster.kill("bridge")  # the broker still takes the send (PUBACK); nobody stores or acks it
        queued = time.monotonic()
        stuck = client.send("room", "while the bridge is down", client_msg_id="stuck-1")
        _wait(lambda: reports, ACK_TIMEOUT_S + 5, "the ack timeout report")
        (report,) = reports
        assert isinstance(report, TimeoutError)
        assert (report.client_msg_id, report.conv, report.connected) == ("stuck-1", "room", True)
        assert ACK_TIMEOUT_S <= report.waited <= time.monotonic() - queued
        assert not stuck.done() and len(client.outbox) == 1  # reported, not given up

        cluster.kill("broker")  # the link drops: the send must survive the reconnect too
        _wait(lambda: not client.connected, 10, "the client to see the broker gone")
        cluster.restart("broker")
        _wait(lambda: client.connected, 20, "the client to reconnect")
        time.sleep(1.0)  # resent on the new connection, still unacked: no second report
        assert len(reports) == 1 and not stuck.done()

        cluster.restart("bridge")
        ack = stuck.result(20)
        assert (ack.status, ack.seq) == ("received", 2)
        assert client.send("room", "after").result(10).seq == 3
        assert len(reports) == 1 and len(client.outbox) == 0
    finally:
        client.close()

    stored = HistoryClient(cluster.api_url, "ben", PASSWORD).messages("room", after=0, limit=50)[0]
    assert [(m["seq"], m["body"]) for m in stored] == [(1, "before"), (2, "while the bridge is down"), (3, "after")]
    assert stored[1]["client_msg_id"] == "stuck-1"


def test_a_send_queued_while_offline_is_reported_as_not_connected(cluster: Cluster) -> None:
    client = ChatClient("127.0.0.1", cluster.mqtt_port, "ben", PASSWORD, device="tablet", api_url=cluster.api_url,
                        ack_timeout=ACK_TIMEOUT_S, reconnect_delay=(0.1, 0.5))
    reports: list[AckTimeout] = []
    client.on_ack_timeout(reports.append)
    client.connect()
    try:
        cluster.kill("broker")
        _wait(lambda: not client.connected, 10, "the client to see the broker gone")
        offline = client.send("room", "typed in a tunnel")
        _wait(lambda: reports, ACK_TIMEOUT_S + 5, "the ack timeout report")
        assert reports[0].connected is False and "not connected" in str(reports[0])
        cluster.restart("broker")
        assert offline.result(20).status == "received"
        assert len(reports) == 1
    finally:
        client.close()
