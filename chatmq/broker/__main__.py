"""``python -m chatmq.broker``: run the broker with Settings read from CHATMQ_* environment variables."""

from __future__ import annotations

import logging

from chatmq.broker.server import run
from chatmq.core.config import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("amqtt").setLevel(logging.WARNING)  # one line per connection otherwise
        logging.getLogger("transitions").setLevel(logging.WARNING)
        logging.getLogger("websockets").setLevel(logging.WARNING)
    run(settings)


if __name__ == "__main__":
    main()
