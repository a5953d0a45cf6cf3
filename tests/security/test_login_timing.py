"""How long a refused login takes must not tell whether the user exists.

An unknown user, a wrong password and a disabled user (with its right password) are refused over
HTTP (``POST /v1/auth/token``) and over MQTT (CONNECT to the real broker). Each round tries every
kind once, in a shuffled order, after one warm-up round; each sample is divided by its round's
median, so load that comes and goes between rounds (the machine is shared) hits every kind alike;
each kind's median over the rounds must be within 20% of the others'. Before every refusal cost an
argon2 check, an unknown or disabled user was refused in 1-3 ms and a wrong password in 100-260 ms
(ratios of 30-170). Comparing plain medians of 9 rounds failed once under load (1.52x) although
the paths cost the same.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from chatmq.core.store import open_store
from tests.api.helpers import PASSWORDS
from tests.broker.conftest import PASSWORDS as BROKER_PASSWORDS
from tests.broker.conftest import BrokerProcess, seed, start_broker
from tests.broker.mqtt import NOT_AUTHORIZED, Mqtt

pytestmark = pytest.mark.timeout(120)

ROUNDS = 15
MAX_SPREAD = 1.2  # the slowest kind's median over the quickest's
_unknown = itertools.count()


def spread(timings: dict[str, list[float]]) -> tuple[float, str]:
    """The slowest kind's median over the quickest's, each sample taken relative to its own round's
    median; and the figures, for the failure message."""
    rounds = list(zip(*timings.values(), strict=True))
    relative = {kind: [r[i] / statistics.median(r) for r in rounds] for i, kind in enumerate(timings)}
    medians = {kind: statistics.median(values) for kind, values in relative.items()}
    ratio = max(medians.values()) / min(medians.values())
    raw = {kind: f"{statistics.median(samples) * 1000:.1f} ms" for kind, samples in timings.items()}
    return ratio, f"relative medians {medians}, raw medians {raw}"


def timed_rounds(attempts: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    order = list(attempts)
    for kind in order:  # warm-up, not counted: a first request pays for connections and caches
        attempts[kind]()
    shuffle = random.Random(14).shuffle
    timings: dict[str, list[float]] = {kind: [] for kind in attempts}
    for _ in range(ROUNDS):
        shuffle(order)  # no kind always first (or last) in its round
        for kind in order:
            started = time.perf_counter()
            attempts[kind]()
            timings[kind].append(time.perf_counter() - started)
    return timings


def test_http_token_refusals_take_as_long_for_every_reason(make_app: Callable[..., Flask]) -> None:
    # No failed-login limit here: a throttled refusal is quick on purpose, whoever asks.
    client = make_app(login_failures_per_user=0, login_failures_per_address=0).test_client()

    def refused(username: str, password: str) -> Callable[[], None]:
        def attempt() -> None:
            response = client.post("/v1/auth/token", json={"username": username, "password": password})
            assert response.status_code == 401, response.get_json()

        return attempt

    def unknown() -> None:
        refused(f"nobody-{next(_unknown)}", "a guess")()

    timings = timed_rounds({
        "unknown user": unknown,
        "wrong password": refused("alice", "a guess"),
        "disabled user": refused("dave", PASSWORDS["dave"]),  # dave is disabled in the fixture store
    })  # fmt: skip
    ratio, figures = spread(timings)
    assert ratio <= MAX_SPREAD, f"{ratio:.2f}x: {figures}"


@pytest.fixture
def broker(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerProcess]:
    """A broker of its own without the failed-login limits (a throttled refusal is quick on purpose)."""
    url = "sqlite:///" + str(tmp_path / "chatmq.db")
    store = open_store(url)
    try:
        seed(store)  # alice, bob, carol; dave disabled
    finally:
        store.close()
    monkeypatch.setenv("CHATMQ_LOGIN_FAILURES_PER_USER", "0")
    monkeypatch.setenv("CHATMQ_LOGIN_FAILURES_PER_ADDRESS", "0")
    running = start_broker(tmp_path, url, redis_url)
    yield running
    running.stop()


def test_mqtt_connect_refusals_take_as_long_for_every_reason(broker: BrokerProcess) -> None:
    wrong = itertools.cycle(["alice", "bob", "carol"])

    def refused(username: str, password: str) -> None:
        assert Mqtt(broker.port, username, password).connect() == NOT_AUTHORIZED

    timings = timed_rounds({
        "unknown user": lambda: refused(f"nobody-{next(_unknown)}", "a guess"),
        "wrong password": lambda: refused(next(wrong), "a guess"),
        "disabled user": lambda: refused("dave", BROKER_PASSWORDS["dave"]),
    })  # fmt: skip
    ratio, figures = spread(timings)
    assert ratio <= MAX_SPREAD, f"{ratio:.2f}x: {figures}"
