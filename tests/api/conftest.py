"""Fixtures for the API tests: a real SQLite store in tmp_path, the private Redis, and an app
factory so each test can choose the settings (broker port, etc.) it needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api import create_app
from chatmq.core.auth import hash_password
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port
from chatmq.core.store import Store, open_store
from tests.api.helpers import PASSWORDS, SECRET


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    """argon2 is slow on purpose: hash each test password once per session."""
    return {user: hash_password(password) for user, password in PASSWORDS.items()}


@pytest.fixture
def store(tmp_path: Path, password_hashes: dict[str, str]) -> Iterator[Store]:
    """alice+bob+dave share c1, alice+carol share c2; dave is disabled; erin is in no conversation."""
    store = open_store("sqlite:///" + str(tmp_path / "chatmq.db"))
    for user, password_hash in password_hashes.items():
        store.create_user(user, password_hash)
    store.set_disabled("dave", True)
    store.create_conversation("c1", ["alice", "bob", "dave"], title="alice & bob")
    store.create_conversation("c2", ["alice", "carol"])
    yield store
    store.close()


@pytest.fixture
def settings(data_dir: Path, redis_url: str) -> Settings:
    # Nothing listens on a fresh free port: the broker check fails unless a test opens it.
    return Settings(data_dir=data_dir, secret_key=SECRET, redis_url=redis_url, broker_port=free_port())


@pytest.fixture
def make_app(settings: Settings, store: Store, redis_client: redis.Redis) -> Callable[..., Flask]:
    def make(**overrides: Any) -> Flask:
        return create_app(settings.model_copy(update=overrides), store=store, redis_client=redis_client)

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
