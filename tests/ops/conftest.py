from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from chatmq.localredis import LocalRedis
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Stack]:
    """One real `chatmq up` (broker, bridge, API, metrics ports) shared by a test module."""
    running = Stack(tmp_path_factory.mktemp("opsstack") / "data", redis_server.url).start()
    yield running
    code = running.stop()
    assert code == 0, f"chatmq up exited with {code} on SIGTERM:\n{running.log()}"


_counter = itertools.count()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names that never collide between tests (and modules) sharing one Redis."""
    n = next(_counter)
    return lambda prefix: f"ops{prefix}{n}"
