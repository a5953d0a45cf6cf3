"""``python -m notifier``: run the notifier with settings from CHATMQ_* environment variables."""

from __future__ import annotations

from chatcore import logs
from chatcore.config import Settings
from notifier.service import run


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    run(settings)


if __name__ == "__main__":
    main()
