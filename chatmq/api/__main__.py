"""``python -m chatmq.api``: serve the HTTP API with settings from CHATMQ_* environment variables."""

from __future__ import annotations

from chatmq.api.server import run
from chatmq.core.config import Settings


def main() -> None:
    run(Settings())


if __name__ == "__main__":
    main()
