"""``python -m bridge``: run the bridge with settings from CHATMQ_* environment variables."""

from __future__ import annotations

from bridge.service import run
from chatcore import logs
from chatcore.config import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    run(settings)


if __name__ == "__main__":
    main()
