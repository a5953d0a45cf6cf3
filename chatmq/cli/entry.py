"""The ``chatmq`` console script: the command line, or a clear word when the server's part is missing.

``pip install chatmq`` installs the device client library only (``chatmq.clients``: paho-mqtt,
pydantic, orjson); the command runs the services and needs ``pip install 'chatmq[server]'``.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from chatmq.cli.main import main as run
    except ModuleNotFoundError as exc:
        sys.exit(f"chatmq: this command needs the server's dependencies (pip install 'chatmq[server]'): {exc}")
    run()
