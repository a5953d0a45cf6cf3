"""``python -m chatmq.bridge``: run the bridge with settings from CHATMQ_* environment variables."""

from __future__ import annotations

from chatmq.bridge.service import run
from chatmq.core import logs
from chatmq.core.config import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    run(settings)


if __name__ == "__main__":
    main()
