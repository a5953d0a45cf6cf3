"""Which bridge worker handles which conversation: fixed partitions, assigned by rendezvous hashing.

Why partitions and not conversations: the set of conversations is unbounded and changes all the
time, while leases and hand-overs need a small fixed set of units. A conversation belongs to
partition ``crc32(conv) % P`` forever (crc32, not ``hash()``, which Python salts per process), so
every worker computes the same answer without talking to the others.

Why rendezvous (highest-random-weight) hashing: each partition goes to the live worker with the
highest ``weight(worker, partition)``. When a worker joins it takes about 1/N of the partitions
from the others and nothing else moves; when one dies only its partitions move, spread over the
survivors. No ring, no state to agree on beyond the list of live workers.

Pure functions only (no Redis, no MQTT): the lease mechanics are in ``chatmq.core.leases``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable

DEFAULT_PARTITIONS = 64
WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def partition_of(key: str, partitions: int) -> int:
    """The partition of a conversation id (or, for presence, of a user id)."""
    return zlib.crc32(key.encode()) % partitions


def weight(worker: str, partition: int) -> int:
    """A stable pseudo-random weight of one (worker, partition) pair, the same in every process."""
    digest = hashlib.blake2b(f"{worker}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(partition: int, workers: Iterable[str]) -> str | None:
    """The live worker that should own ``partition``; None when no worker is alive."""
    return max(workers, key=lambda w: (weight(w, partition), w), default=None)


def assignment(worker: str, workers: Iterable[str], partitions: int) -> frozenset[int]:
    """The partitions ``worker`` should own when ``workers`` are alive (itself included or not)."""
    live = sorted(set(workers) | {worker})
    return frozenset(p for p in range(partitions) if owner_of(p, live) == worker)


def check_worker_id(worker: str) -> str:
    """Worker ids end up in MQTT client ids and Redis keys: keep them short and plain."""
    if not WORKER_ID_PATTERN.match(worker):
        raise ValueError(f"bad bridge worker id {worker!r}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    return worker
