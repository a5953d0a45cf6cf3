"""Fixtures for the notifier tests: a real SQLite store, the private Redis, local HTTP receivers
standing in for the push gateway and webhook endpoints, and a notifier running in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatmq.core.config import Settings
from chatmq.core.store import Store, open_store
from chatmq.notifier.service import Notifier
from tests.notify.receiver import Receiver


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store("sqlite:///" + str(tmp_path / "chatmq.db"))
    for user in ("alice", "bob", "carol", "dave"):
        store.create_user(user, "h")
    store.create_conversation("team", ["alice", "bob", "carol", "dave"], title="Team")
    store.create_conversation("pair", ["alice", "bob"])
    store.delete_outbox([entry.id for entry in store.pending_outbox()])  # the set-up is not under test
    yield store
    store.close()


@pytest.fixture
def gateway() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def hook_receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def run_notifier(
    store: Store, redis_client: redis.Redis, redis_url: str, data_dir: Path, gateway: Receiver
) -> Iterator[Callable[..., Notifier]]:
    """Start a notifier in a thread with these setting overrides; stopped at teardown."""
    running: list[tuple[Notifier, threading.Event, threading.Thread]] = []

    def start(**overrides: Any) -> Notifier:
        options = {"data_dir": data_dir, "redis_url": redis_url, "push_gateway_url": gateway.url + "/notify",
                   "push_collapse_s": 0, "delivery_retry_base_s": 0.05, "delivery_retry_cap_s": 0.2,
                   "delivery_timeout_s": 2, "notifier_lease_s": 1, **overrides}  # fmt: skip
        settings = Settings(**options)
        notifier = Notifier(settings, store, redis_client)
        stop = threading.Event()
        thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        thread.start()
        assert notifier.active.wait(5), "the notifier did not take its lease"
        running.append((notifier, stop, thread))
        return notifier

    yield start
    for _notifier, stop, thread in running:
        stop.set()
        thread.join(10)
