"""Two partitioned bridge workers on Mosquitto (dynamic security): each send is stored, acked and
delivered once although both workers receive it, and when one worker stops cleanly the other
takes all its partitions and keeps answering."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.leases import lease_holder
from chatmq.core.partitions import owner_of
from chatmq.core.store import Store
from tests.access_cases import CONVERSATIONS
from tests.mosquitto_broker.test_end_to_end import send, wait_until
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(90)
PARTITIONS = 8


@pytest.fixture
def workers(
    settings: Settings, store: Store, redis_client: redis.Redis, sync: object
) -> Iterator[dict[str, Bridge]]:
    worker_settings = settings.model_copy(update={"bridge_partitions": PARTITIONS, "bridge_lease_s": 1.0})
    running = {name: Bridge(worker_settings, store, redis_client, worker_id=name) for name in ("m1", "m2")}
    for bridge in running.values():
        bridge.start()
    for name, bridge in running.items():
        assert bridge.wait_connected(10), f"worker {name} could not log in to Mosquitto"
    yield running
    for bridge in running.values():
        bridge.stop()


def owned(bridges: dict[str, Bridge]) -> dict[str, int]:
    return {name: bridge.partitions.owned for name, bridge in bridges.items() if bridge.partitions is not None}


def acks(client: RawClient, count: int) -> list[dict[str, object]]:
    """Exactly ``count`` acks arrive (and no second copy of any shortly after)."""
    got = [orjson.loads(client.expect("user/alice/ack", timeout=20)) for _ in range(count)]
    try:
        topic, payload = client.received.get(timeout=1.0)
    except queue.Empty:
        return got
    pytest.fail(f"an extra message arrived: {topic} {payload!r}")


def test_two_workers_answer_each_send_once_and_one_leaving_hands_over(
    workers: dict[str, Bridge], connect: Callable[..., RawClient], store: Store, redis_client: redis.Redis
) -> None:
    # Settled: every partition leased by its rendezvous owner (a send arriving during a hand-over's
    # grace period may be answered by both workers: the same seq twice, which devices accept).
    settled = {p: owner_of(p, ["m1", "m2"]) for p in range(PARTITIONS)}
    wait_until(
        lambda: all(lease_holder(redis_client, p) == w for p, w in settled.items())
        and sum(owned(workers).values()) == PARTITIONS,
        "both workers holding their partitions",
        timeout=30,
    )
    convs = [c for c, members in CONVERSATIONS.items() if "alice" in members]

    alice = connect("alice")
    assert alice.subscribe("user/alice/ack")
    for n, conv in enumerate(convs):
        send(alice, conv, "alice", f"before{n}", "hello")
    got = acks(alice, len(convs))
    assert sorted(str(a["client_msg_id"]) for a in got) == [f"before{n}" for n in range(len(convs))]
    assert all(a["status"] == "received" for a in got)

    workers["m1"].stop()  # clean: leaves the registry, drains, releases its leases
    wait_until(lambda: workers["m2"].partitions is not None and workers["m2"].partitions.owned == PARTITIONS,
               "the remaining worker holding every partition", timeout=30)  # fmt: skip
    for n, conv in enumerate(convs):
        send(alice, conv, "alice", f"after{n}", "still here")
    got = acks(alice, len(convs))
    assert sorted(str(a["client_msg_id"]) for a in got) == [f"after{n}" for n in range(len(convs))]
    for conv in convs:
        assert [m.seq for m in store.history(conv).messages] == [1, 2]
