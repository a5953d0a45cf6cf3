"""A persistent session that reconnects gets what it is owed first, then live messages, in order.

Messages queued while it was offline (and deliveries never acknowledged) are older than anything
routed after the reconnect; a live message must not overtake them. This is what a device sees when
it reconnects to a restarted broker while the bridge already publishes again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.mqtt import Mqtt

pytestmark = pytest.mark.timeout(90)


def test_queued_messages_are_not_overtaken_by_live_ones_after_a_reconnect(run_broker: Any) -> None:
    running = run_broker("ours")
    service = Mqtt(running.port, SERVICE_USER, issue_token(SECRET, SERVICE_USER, 300, service=True).token)
    assert service.connect() == 0
    stop = threading.Event()
    sent: list[int] = []

    def publish_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            service.client.publish("chat/c1/msg", b"%d" % n, qos=1)
            sent.append(n)
            time.sleep(0.0005)

    publisher = threading.Thread(target=publish_forever, daemon=True)
    try:
        for attempt in range(5):
            bob = Mqtt(running.port, "bob", PASSWORDS["bob"], client_id=f"bob-order-{attempt}", clean_session=False)
            assert bob.connect() == 0
            assert bob.subscribe("chat/c1/msg") == 1
            bob.stop()
            if not publisher.is_alive():
                publisher.start()
            time.sleep(0.3)  # some hundred messages queue up for the offline session
            first = len(sent)
            again = Mqtt(running.port, "bob", PASSWORDS["bob"], client_id=f"bob-order-{attempt}", clean_session=False)
            assert again.connect() == 0
            time.sleep(0.5)
            again.stop()
            got = [int(m.payload) for m in again.drain(0.2)]
            assert got, "nothing delivered after the reconnect"
            assert got[0] <= first
            firsts = [n for i, n in enumerate(got) if n not in got[:i]]  # repeats are allowed, not reordering
            assert firsts == sorted(firsts), f"out of order after reconnect {attempt}: {_first_inversion(firsts)}"
    finally:
        stop.set()
        publisher.join(5)
        service.stop()


def _first_inversion(seen: list[int]) -> str:
    for i in range(1, len(seen)):
        if seen[i] < seen[i - 1]:
            return f"{seen[i - 1]} then {seen[i]} (around {seen[max(0, i - 3) : i + 3]})"
    return "none"
