"""Partition assignment (pure), leases and the worker registry on a real Redis and a real 3-master
Redis Cluster, and the hand-over protocol of two partition gates sharing one Redis."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from chatmq.bridge.partitions import PartitionGate
from chatmq.bridge.service import resolve_worker_id
from chatmq.bridge.worker import BatchWorker
from chatmq.cli.localredis import LocalRedis
from chatmq.cli.main import cli
from chatmq.core.leases import (
    Leases,
    PartitionCountMismatch,
    WorkerRegistry,
    lease_holder,
    live_workers,
)
from chatmq.core.partitions import assignment, check_worker_id, owner_of, partition_of
from chatmq.core.redisconn import connect

P = 64


# --- pure assignment ---------------------------------------------------------------------------
def test_partition_of_is_crc32_so_every_process_agrees() -> None:
    # not hash(): Python salts str hashes per process, so two workers would disagree
    assert partition_of("a", P) == 0xE8B7BE43 % P
    assert partition_of("conv-1", 1) == 0


def test_every_partition_has_exactly_one_owner_and_the_load_is_shared() -> None:
    workers = ["w1", "w2", "w3"]
    shares = [assignment(w, workers, P) for w in workers]
    assert sorted(p for share in shares for p in share) == list(range(P))
    assert all(len(share) >= P // 3 - 12 for share in shares), [len(s) for s in shares]


def test_a_join_moves_only_partitions_to_the_new_worker() -> None:
    before = {p: owner_of(p, ["w1", "w2", "w3"]) for p in range(P)}
    after = {p: owner_of(p, ["w1", "w2", "w3", "w4"]) for p in range(P)}
    moved = [p for p in range(P) if before[p] != after[p]]
    assert moved and all(after[p] == "w4" for p in moved)
    assert len(moved) < P // 2


def test_a_death_moves_only_the_dead_workers_partitions() -> None:
    before = {p: owner_of(p, ["w1", "w2", "w3"]) for p in range(P)}
    after = {p: owner_of(p, ["w1", "w3"]) for p in range(P)}
    assert {p for p in range(P) if before[p] != after[p]} == {p for p in range(P) if before[p] == "w2"}
    assert Counter(after.values()).keys() == {"w1", "w3"}


def test_worker_ids_are_checked() -> None:
    assert check_worker_id("bridge-1.eu_west") == "bridge-1.eu_west"
    for bad in ("", "-x", "a b", "a/b", "x" * 65, "a#1"):
        with pytest.raises(ValueError, match="bad bridge worker id"):
            check_worker_id(bad)


# --- leases and registry on Redis and Redis Cluster ------------------------------------------------
@pytest.fixture(params=["single", "cluster"])
def client(request: pytest.FixtureRequest, redis_server: LocalRedis) -> Iterator[redis.Redis]:
    if request.param == "single":
        conn = connect(redis_server.url)
        conn.flushall()
    else:
        conn = connect(request.getfixturevalue("redis_cluster").url)
        conn.flushall(target_nodes="primaries")
    yield conn
    conn.close()


def wait_until(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_lease_has_one_holder_until_released_or_lapsed(client: redis.Redis) -> None:
    a, b = Leases(client, "a", ttl_ms=400), Leases(client, "b", ttl_ms=400)
    partitions = range(8)  # spread over the cluster's slots
    assert all(a.acquire(p) for p in partitions)
    assert not any(b.acquire(p) for p in partitions)
    assert all(a.acquire(p) for p in partitions)  # already ours: extended, not refused
    assert not b.renew(0) and not b.release(0)  # only the holder renews or releases
    assert lease_holder(client, 0) == "a"
    assert a.release(0) and b.acquire(0) and lease_holder(client, 0) == "b"
    assert not a.renew(0)
    # a holder that stops renewing loses the lease after its TTL, to whoever asks next
    assert wait_until(lambda: b.acquire(1))
    assert not a.renew(1)


def test_a_restarted_worker_waits_for_its_previous_incarnation(client: redis.Redis) -> None:
    first, second = Leases(client, "w1", ttl_ms=500), Leases(client, "w1", ttl_ms=500)
    assert first.acquire(3)
    assert not second.acquire(3)  # same worker id, another process: not the same holder
    assert wait_until(lambda: second.acquire(3))


def test_the_registry_lists_live_workers_and_forgets_the_dead(client: redis.Redis) -> None:
    one = WorkerRegistry(client, "one", P, ttl_ms=400)
    two = WorkerRegistry(client, "two", P, ttl_ms=60_000)
    assert one.beat().workers == {"one"}
    assert two.beat().workers == {"one", "two"}
    assert live_workers(client) == {"one": P, "two": P}
    assert wait_until(lambda: two.beat().workers == {"two"})  # one stopped beating
    one.beat()
    one.leave()
    assert two.beat().workers == {"two"}


def test_workers_must_agree_on_the_partition_count(client: redis.Redis) -> None:
    WorkerRegistry(client, "old", 64, ttl_ms=60_000).beat()
    with pytest.raises(PartitionCountMismatch, match="CHATMQ_BRIDGE_PARTITIONS"):
        WorkerRegistry(client, "new", 32, ttl_ms=60_000).beat()


# --- two gates handing partitions over ------------------------------------------------------------
class Recorder(BatchWorker[str]):
    """Stands in for the writer: records what it handled, in order."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__("recorder")
        self.batch_max = 1
        self.delay_s = delay_s  # a slow store: the hand-over must wait for it
        self.handled: list[str] = []

    def _handle(self, batch: list[str]) -> None:
        time.sleep(self.delay_s)
        self.handled.extend(batch)


def make_gate(
    client: redis.Redis, worker: str, partitions: int, ttl_ms: int = 3000, delay_s: float = 0.0
) -> tuple[PartitionGate, Recorder]:
    recorder = Recorder(delay_s)
    recorder.start()
    gate = PartitionGate(
        WorkerRegistry(client, worker, partitions, ttl_ms), Leases(client, worker, ttl_ms), partitions,
        workers=[recorder], interval_s=0.05,
    )  # fmt: skip
    return gate, recorder


def offer(gate: PartitionGate, recorder: Recorder, key: str, item: str, dropped: list[str]) -> None:
    gate.offer(key, lambda: recorder.submit(item), lambda: dropped.append(item))


def test_a_joining_gate_holds_until_the_old_owner_drained_and_released(client: redis.Redis) -> None:
    partitions = 8
    old, old_rec = make_gate(client, "old", partitions, delay_s=0.2)
    new, new_rec = make_gate(client, "new", partitions)
    try:
        old.tick()
        assert old.owned == partitions
        moving = sorted(assignment("new", ["old", "new"], partitions))
        assert moving
        conv = next(f"c{i}" for i in range(1000) if partition_of(f"c{i}", partitions) == moving[0])
        dropped: list[str] = []
        new.tick()  # joins: its partitions are assigned to it but still leased by old
        assert new.owned == 0
        for n in range(5):  # both receive every message; old admits, new holds
            offer(old, old_rec, conv, f"m{n}", [])
            offer(new, new_rec, conv, f"m{n}", dropped)
        assert new.held == 5 and not dropped
        deadline = time.monotonic() + 20
        while not new.owns(conv) and time.monotonic() < deadline:  # other moving partitions may come first
            # at no moment do both hold the lease of the moving partition
            assert not (old.owns(conv) and new.owns(conv))
            old.tick()
            new.tick()
            time.sleep(0.02)
        assert new.owns(conv) and not old.owns(conv)
        assert old_rec.handled == [f"m{n}" for n in range(5)]  # released only after its writer settled them
        assert wait_until(lambda: new_rec.handled == [f"m{n}" for n in range(5)])
        offer(old, old_rec, conv, "late", dropped)  # old drops (PUBACKs) what is no longer its
        assert dropped == ["late"]
        assert old.owned + new.owned == partitions
    finally:
        for gate, rec in ((old, old_rec), (new, new_rec)):
            gate.stop()
            rec.stop()


def test_a_leaving_gate_hands_everything_over(client: redis.Redis) -> None:
    partitions = 8
    first, first_rec = make_gate(client, "first", partitions)
    second, second_rec = make_gate(client, "second", partitions)
    try:
        first.tick()
        second.tick()
        first.start()
        second.start()
        assert wait_until(lambda: first.owned + second.owned == partitions and first.owned and second.owned)
        assert first.leave(timeout=20)
        assert wait_until(lambda: second.owned == partitions)
        assert {lease_holder(client, p) for p in range(partitions)} == {"second"}
    finally:
        for gate, rec in ((first, first_rec), (second, second_rec)):
            gate.stop()
            rec.stop()


def test_the_cli_refuses_a_bad_worker_id_precisely() -> None:
    result = CliRunner().invoke(cli, ["bridge", "--worker-id", "a/b"], env={"CHATMQ_BRIDGE_WORKER_ID": None})
    assert result.exit_code == 2
    assert "bad bridge worker id 'a/b'" in result.output


def test_auto_worker_ids_are_host_and_pid_and_no_id_means_the_single_bridge() -> None:
    worker = resolve_worker_id("auto")
    assert worker is not None and worker.endswith(f"-{os.getpid()}") and check_worker_id(worker)
    assert resolve_worker_id(None) is None and resolve_worker_id("") is None
    assert resolve_worker_id("bridge-2") == "bridge-2"
