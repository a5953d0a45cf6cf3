"""`chatmq user add` gives the password to Mosquitto; `chatmq mosquitto-sync --once` syncs."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from chatmq.adapters.mosquitto.sync import MosquittoSync
from chatmq.cli.main import cli
from chatmq.core.config import Settings
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(60)


def test_user_add_pushes_the_password_and_the_sync_grants_the_role(
    settings: Settings, sync: MosquittoSync, connect: Callable[..., RawClient]
) -> None:
    env = {"CHATMQ_MOSQUITTO_URL": settings.mosquitto_url or "", "CHATMQ_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(cli, ["user", "add", "erin", "--password-stdin"], input="erin-pw\n", env=env)
    assert result.exit_code == 0, result.output
    erin = connect("erin", "erin-pw")
    assert not erin.refused
    deadline = time.monotonic() + 15  # the role follows within one sync poll
    while True:
        try:
            if erin.subscribe("user/erin/ack", timeout=2):
                break
        except queue.Empty:
            pass  # Mosquitto's dynamic security disconnects a client whose roles change; paho reconnects
        assert time.monotonic() < deadline, "erin's role never arrived"
        time.sleep(0.05)
    assert not erin.subscribe("user/alice/ack")


def test_sync_once_from_the_command_line(settings: Settings, store: object) -> None:
    env = {"CHATMQ_MOSQUITTO_URL": settings.mosquitto_url or "", "CHATMQ_DATA_DIR": str(settings.data_dir),
           "CHATMQ_SERVICE_PASSWORD": "pw"}
    result = CliRunner().invoke(cli, ["mosquitto-sync", "--once"], env=env)
    assert result.exit_code == 0, result.output
    assert "changes sent" in result.output
    missing = CliRunner().invoke(cli, ["mosquitto-sync", "--once"], env={**env, "CHATMQ_SERVICE_PASSWORD": ""})
    assert missing.exit_code == 2 and "--service-password" in missing.output
