"""``pip install chatmq`` is the device client library: it imports with the distribution's own
requirements only (paho-mqtt, pydantic, orjson), none of the server's (the ``[server]`` extra)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the base requirements bring, as import names (pydantic's own dependencies included).
BASE_IMPORTS = {"paho", "pydantic", "pydantic_core", "orjson", "typing_extensions", "annotated_types",
                "typing_inspection"}

PROBE = r"""
import importlib.abc, importlib.metadata, sys
allowed = {"chatmq"} | set(sys.argv[1].split(","))
# every installed third-party package (the venv holds the server's and the tests' too) but the base
installed = set(importlib.metadata.packages_distributions()) - set(sys.stdlib_module_names)

class OnlyTheBase(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in installed and top not in allowed:
            raise ModuleNotFoundError(f"{name} is not a requirement of the client library", name=name)
        return None

sys.meta_path.insert(0, OnlyTheBase())
import chatmq.clients
from chatmq.clients import ChatClient, Timeline
client = ChatClient("127.0.0.1", 1, "alice", "pw")
print("\n".join(sorted(m for m in sys.modules if m.startswith("chatmq."))))
"""


def _base_requirements() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    return {re.split(r"[<>=\[; ]", line)[0] for line in lines if line and not line.startswith("#")}


def test_the_distribution_requires_only_what_the_client_library_imports() -> None:
    assert _base_requirements() == {"paho-mqtt", "pydantic", "orjson"}


def test_the_client_library_imports_without_the_server_dependencies() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, ",".join(sorted(BASE_IMPORTS))], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    assert "chatmq.clients.chat" in imported
    server = ("chatmq.broker", "chatmq.bridge", "chatmq.api", "chatmq.cli", "chatmq.core.store")
    assert not [name for name in imported if name.startswith(tuple(f"{part}." for part in server)) or name in server]


def test_the_command_says_what_to_install_without_the_server_dependencies() -> None:
    probe = PROBE.split("import chatmq.clients")[0] + "from chatmq.cli.entry import main\nmain()\n"
    result = subprocess.run([sys.executable, "-c", probe, ",".join(sorted(BASE_IMPORTS))], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pip install 'chatmq[server]'" in result.stderr
