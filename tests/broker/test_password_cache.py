"""Password logins: the verified-password cache (chatmq/core/credcache.py) and the argon2 pool of the
login hook. Correctness only (no timings): what the cache may never accept, and where argon2 runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatmq.core import auth
from chatmq.core.auth import Authenticator, hash_password, issue_token, token_claims
from chatmq.core.credcache import VerifiedPasswords
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store, open_store
from tests.broker.conftest import PASSWORDS, SECRET
from tests.broker.inproc import OURS
from tests.broker.mqtt import NOT_AUTHORIZED, Mqtt

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread name of every full argon2 verification."""
    calls: list[str] = []
    real = auth.verify_password

    def counting(password_hash: str, password: str) -> bool:
        calls.append(threading.current_thread().name)
        return real(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", counting)
    return calls


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("sqlite:///" + str(tmp_path / "auth.db"))
    opened.create_user("erin", hash_password("erin-pw"))
    yield opened
    opened.close()


# ---- the cache on its own --------------------------------------------------------------------


def test_cache_matches_only_the_same_user_hash_and_password() -> None:
    cache = VerifiedPasswords()
    cache.remember("erin", "$hash-1", "secret")
    assert cache.matches("erin", "$hash-1", "secret")
    assert not cache.matches("erin", "$hash-1", "secreT")
    assert not cache.matches("erin", "$hash-2", "secret")  # the password was changed since
    assert not cache.matches("frank", "$hash-1", "secret")


def test_cache_entries_expire() -> None:
    clock = Clock()
    cache = VerifiedPasswords(ttl_s=60, clock=clock)
    cache.remember("erin", "$h", "pw")
    clock.now += 59
    assert cache.matches("erin", "$h", "pw")
    clock.now += 2
    assert not cache.matches("erin", "$h", "pw")
    assert len(cache) == 0  # an expired entry is dropped when found


def test_cache_is_bounded_least_recently_used_first_out() -> None:
    cache = VerifiedPasswords(max_users=2)
    cache.remember("a", "$h", "pw")
    cache.remember("b", "$h", "pw")
    assert cache.matches("a", "$h", "pw")  # a is now the most recently used
    cache.remember("c", "$h", "pw")
    assert len(cache) == 2
    assert cache.matches("a", "$h", "pw") and cache.matches("c", "$h", "pw")
    assert not cache.matches("b", "$h", "pw")
    for user in "abcdefgh":
        cache.remember(user, "$h", "pw")
    assert len(cache) == 2


def test_cache_keeps_no_password() -> None:
    cache = VerifiedPasswords()
    cache.remember("erin", "$h", "a-distinctive-password")
    assert b"a-distinctive-password" not in repr(cache._entries).encode()


# ---- the authenticator with the cache -----------------------------------------------------------


def test_right_password_is_verified_once(store: Store, verifications: list[str]) -> None:
    authenticator = Authenticator(store, SECRET, verified=VerifiedPasswords())
    assert authenticator.authenticate("erin", "erin-pw") is not None
    assert authenticator.authenticate("erin", "erin-pw") is not None
    assert len(verifications) == 1


def test_wrong_password_is_never_cached(store: Store, verifications: list[str]) -> None:
    authenticator = Authenticator(store, SECRET, verified=VerifiedPasswords())
    assert authenticator.authenticate("erin", "erin-pw") is not None  # a right one is cached
    for _ in range(3):
        assert authenticator.authenticate("erin", "wrong-pw") is None
    assert len(verifications) == 4  # every wrong guess paid a full argon2 check


def test_changed_password_or_disabled_user_is_refused_even_if_cached(store: Store) -> None:
    authenticator = Authenticator(store, SECRET, verified=VerifiedPasswords())
    assert authenticator.authenticate("erin", "erin-pw") is not None
    store.set_password("erin", hash_password("new-pw"))
    assert authenticator.authenticate("erin", "erin-pw") is None
    assert authenticator.authenticate("erin", "new-pw") is not None
    store.set_disabled("erin", True)
    assert authenticator.authenticate("erin", "new-pw") is None


def test_revoked_token_is_refused_after_a_successful_login(store: Store, redis_url: str) -> None:
    revocations = TokenRevocations(redis.Redis.from_url(redis_url), 3600)
    authenticator = Authenticator(store, SECRET, revocations, VerifiedPasswords())
    one, other = issue_token(SECRET, "erin", 600).token, issue_token(SECRET, "erin", 600).token
    assert authenticator.authenticate("erin", one) is not None
    assert authenticator.authenticate("erin", other) is not None
    claims = token_claims(SECRET, one)
    assert claims is not None and revocations.revoke_token(claims)
    assert authenticator.authenticate("erin", one) is None
    assert authenticator.authenticate("erin", other) is not None
    revocations.revoke_user("erin")
    assert authenticator.authenticate("erin", other) is None


# ---- the broker: argon2 on its own pool, tokens not -------------------------------------------------


def test_broker_verifies_passwords_on_the_argon2_pool(run_broker: Callable[..., Any], verifications: list[str]) -> None:
    running = run_broker(OURS)
    clients = [Mqtt(running.port, "alice", PASSWORDS["alice"]) for _ in range(3)]
    clients.append(Mqtt(running.port, "alice", issue_token(SECRET, "alice", 300).token))
    clients.append(Mqtt(running.port, "alice", "wrong-pw"))
    try:
        codes = [client.connect() for client in clients]
    finally:
        for client in clients:
            client.stop()
    assert codes == [0, 0, 0, 0, NOT_AUTHORIZED]
    # one full check for the right password (then cached), one for the wrong one, none for the token
    assert len(verifications) == 2
    assert all(name.startswith("chatmq-argon2") for name in verifications)


def test_broker_password_cache_can_be_turned_off(run_broker: Callable[..., Any], verifications: list[str]) -> None:
    running = run_broker(OURS, password_cache_s=0)
    for _ in range(2):
        client = Mqtt(running.port, "bob", PASSWORDS["bob"])
        try:
            assert client.connect() == 0
        finally:
            client.stop()
    assert len(verifications) == 2
