"""chatmq's part of rabbitmq.conf (chatmq.adapters.rabbitmq.config, `chatmq rabbitmq-config`).

A private node boots with these lines in tests/rabbit (tests/rabbit/hooked.py); here: what they say
and what is refused before a node would fail on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chatmq.adapters.rabbitmq.config import Listeners, auth_lines, node_config
from chatmq.cli.main import cli
from chatmq.core.config import Settings


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, rabbitmq_hook_secret="hook-Secret_1.2~3", **overrides)  # type: ignore[arg-type]


def test_the_config_points_the_http_backend_at_the_api(tmp_path: Path) -> None:
    text = node_config(_settings(tmp_path, rabbitmq_vhost="chat"), "http://api:8080/",
                       Listeners("127.0.0.1:1884", 15676, "127.0.0.1"))  # fmt: skip
    lines = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    assert lines["auth_backends.1"] == "internal" and lines["auth_backends.2"] == "http"
    assert lines["auth_http.http_method"] == "post"
    for kind in ("user", "vhost", "resource", "topic"):
        assert lines[f"auth_http.{kind}_path"] == f"http://rabbitmq:hook-Secret_1.2~3@api:8080/v1/rabbitmq/{kind}"
    assert lines["mqtt.allow_anonymous"] == "false" and lines["mqtt.vhost"] == "chat"
    assert lines["mqtt.exchange"] == "amq.topic" and lines["mqtt.durable_queue_type"] == "quorum"
    assert lines["mqtt.prefetch"] == "1000"
    assert lines["mqtt.listeners.tcp.default"] == "127.0.0.1:1884"
    assert lines["web_mqtt.tcp.port"] == "15676" and lines["web_mqtt.tcp.ip"] == "127.0.0.1"


@pytest.mark.parametrize(("secret", "api_url", "error"), [
    (None, "http://api:8080", "is not set"),
    ("has space", "http://api:8080", "URL-safe"),
    ("p@ss", "http://api:8080", "URL-safe"),
    ("good-secret", "api:8080", "http(s)://"),
    ("good-secret", "http://user:pw@api:8080", "without credentials"),
    ("good-secret", "ftp://api", "http(s)://"),
])
def test_unusable_settings_are_refused(tmp_path: Path, secret: str | None, api_url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        auth_lines(Settings(data_dir=tmp_path, rabbitmq_hook_secret=secret), api_url)


def test_the_command_prints_it(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("CHATMQ_RABBITMQ_HOOK_SECRET", "cli-secret")
    result = runner.invoke(cli, ["rabbitmq-config", "--api-url", "http://127.0.0.1:8080"])
    assert result.exit_code == 0 and "auth_http.topic_path = http://rabbitmq:cli-secret@127.0.0.1:8080" in result.output
    monkeypatch.delenv("CHATMQ_RABBITMQ_HOOK_SECRET")
    result = runner.invoke(cli, ["rabbitmq-config", "--api-url", "http://127.0.0.1:8080"])
    assert result.exit_code != 0 and "CHATMQ_RABBITMQ_HOOK_SECRET is not set" in result.output


def test_the_command_writes_it_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATMQ_RABBITMQ_HOOK_SECRET", "file-secret")
    target = tmp_path / "50-chatmq.conf"
    target.write_text("old\n")
    result = CliRunner().invoke(cli, ["rabbitmq-config", "--api-url", "http://api:8080", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == node_config(Settings(data_dir=tmp_path, rabbitmq_hook_secret="file-secret"),
                                             "http://api:8080")  # fmt: skip
    assert target.stat().st_mode & 0o777 == 0o644 and [p.name for p in tmp_path.iterdir()] == ["50-chatmq.conf"]
    monkeypatch.delenv("CHATMQ_RABBITMQ_HOOK_SECRET")
    result = CliRunner().invoke(cli, ["rabbitmq-config", "--api-url", "http://api:8080", "--output", str(target)])
    assert result.exit_code != 0
    assert target.read_text().startswith("# chatmq on RabbitMQ"), "a refusal keeps the old file"
