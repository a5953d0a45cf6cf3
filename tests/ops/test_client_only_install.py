"""`pip install chatmq` without the [server] extra: the client library works, the command says what
to install. Simulated in this environment by blocking the server's packages (an import of a name set
to None in sys.modules raises ModuleNotFoundError, as when it is not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

SERVER_ONLY = ("click", "amqtt", "flask", "flask_openapi3", "werkzeug", "redis", "pymongo", "granian", "argon2",
               "httpx", "pydantic_settings", "pythonjsonlogger", "jwt", "filetype", "prometheus_client", "uvloop")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({SERVER_ONLY!r}));"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True, text=True, timeout=50)


@pytest.mark.parametrize("how", ["from chatmq.cli.entry import main; main()",  # the console script
                                 "import runpy; runpy.run_module('chatmq.cli', run_name='__main__')"])
def test_the_command_says_what_to_install(how: str) -> None:
    """`python -m chatmq.cli` printed a ModuleNotFoundError traceback; the console script a hint."""
    result = _python(how)
    assert result.returncode == 1, result
    assert "pip install 'chatmq[server]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_the_client_library_imports_and_constructs_without_them(tmp_path: Path) -> None:
    """The chatmq/clients/README.md example, up to connecting (no broker here)."""
    result = _python(
        "from chatmq.clients import AsyncChatClient, ChatClient, HistoryClient, Timeline\n"
        "client = ChatClient('127.0.0.1', 1883, 'alice', 'secret', device='phone',"
        " api_url='http://127.0.0.1:8080', state_file=sys.argv[1])\n"
        "client.on_message(lambda e: None); client.on_presence(lambda e: None)\n"
        "print('ok', type(client).__name__, Timeline.__name__)\n",
        str(tmp_path / "alice-phone.db"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ChatClient Timeline"
