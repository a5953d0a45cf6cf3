"""The app opens its own store lazily and once per process: SQLite handles never cross a fork."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import redis

from chatmq.api import create_app
from chatmq.api.context import ApiContext, get_context
from chatmq.core.config import Settings
from chatmq.core.store import open_store

pytestmark = pytest.mark.timeout(30)


def _child_store_check(ctx: ApiContext, parent_store_id: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = ctx.store
    queue.put((id(store) != parent_store_id, store.get_conversation("c1") is not None))


def test_store_opened_on_first_use_and_again_after_fork(
    tmp_path: Path, data_dir: Path, redis_client: redis.Redis
) -> None:
    db = tmp_path / "lazy.db"
    settings = Settings(data_dir=data_dir, store_url=f"sqlite:///{db}", secret_key="k" * 32)
    app = create_app(settings, redis_client=redis_client)
    assert not db.exists(), "the factory must not open the store"

    seed = open_store(f"sqlite:///{db}")
    seed.create_conversation("c1", [])
    seed.close()

    ctx = get_context(app)
    parent_store = ctx.store
    assert ctx.store is parent_store  # one per process, reused
    assert app.test_client().get("/readyz").get_json()["checks"]["store"] == "ok"

    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_child_store_check, args=(ctx, id(parent_store), queue))
    child.start()
    fresh, works = queue.get(timeout=10)
    child.join(timeout=10)
    assert child.exitcode == 0
    assert fresh and works
    assert ctx.store is parent_store  # the parent's handle is untouched
    ctx.close()
