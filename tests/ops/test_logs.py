"""Per-component log levels (CHATMQ_LOG_LEVELS) over the global level."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from chatmq.core import logs

pytestmark = pytest.mark.timeout(30)


def test_levels_are_parsed_and_junk_is_refused() -> None:
    assert logs.parse_levels(" chatmq.broker=debug, chatmq.bridge.writer=WARNING ,") == {
        "chatmq.broker": logging.DEBUG, "chatmq.bridge.writer": logging.WARNING
    }
    for junk in ("broker", "=DEBUG", "broker=LOUD"):
        with pytest.raises(ValueError, match="LOGGER=LEVEL"):
            logs.parse_levels(junk)


def test_a_component_is_quieter_or_louder_than_the_rest() -> None:
    code = (
        "import logging; from chatmq.core import logs;"
        "logs.configure('INFO', 'text', 'chatty=DEBUG,quiet=ERROR');"
        "logging.getLogger('chatty').debug('chatty-debug'); logging.getLogger('quiet').warning('quiet-warning');"
        "logging.getLogger('other').info('other-info'); logging.getLogger('other').debug('other-debug')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20).stderr
    assert "chatty-debug" in err and "other-info" in err
    assert "quiet-warning" not in err and "other-debug" not in err


def test_the_cli_refuses_a_bad_spec() -> None:
    result = subprocess.run([sys.executable, "-m", "chatmq.cli", "--log-levels", "nonsense", "user", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--log-levels" in result.stderr


def test_third_party_request_lines_stay_quiet_unless_debug() -> None:
    """httpx logged one INFO line per HTTP request (the RabbitMQ session guard's management calls, the
    notifier's webhook and gateway calls) into the stack's log."""
    def emitted(level: str) -> str:
        code = (f"import logging; from chatmq.core import logs; logs.configure({level!r});"
                "logging.getLogger('httpx').info('httpx-request-line');"
                "logging.getLogger('chatmq.x').info('chatmq-info')")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20).stderr
    quiet = emitted("INFO")
    assert "chatmq-info" in quiet and "httpx-request-line" not in quiet
    assert "httpx-request-line" in emitted("DEBUG")
