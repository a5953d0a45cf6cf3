"""``python -m api``: serve the HTTP API with settings from CHATMQ_* environment variables."""

from __future__ import annotations

from api.server import run
from chatcore.config import Settings


def main() -> None:
    run(Settings())


if __name__ == "__main__":
    main()
