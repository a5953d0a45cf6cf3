"""``python -m bridge``: run the bridge with settings from CHATMQ_* environment variables."""

from __future__ import annotations

import logging

from bridge.service import run
from chatcore.config import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(settings)


if __name__ == "__main__":
    main()
