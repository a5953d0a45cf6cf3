"""One logging set-up for every chatmq process: one line per event, text or JSON.

``CHATMQ_LOG_FORMAT=json`` gives one JSON object per line (for log shippers); the default is
readable text. ``CHATMQ_LOG_LEVEL`` sets chatmq's level; the chattiest third-party loggers
(amqtt logs every connection, transitions every state change, httpx every request the notifier, the
push gateway and the RabbitMQ session guard make) stay at WARNING unless DEBUG.
Secrets never reach a log line: code logs user ids and client ids, never passwords or tokens.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("amqtt", "transitions", "websockets", "httpx", "httpcore")


def parse_levels(spec: str) -> dict[str, int]:
    """``"chatmq.broker=DEBUG,chatmq.bridge.writer=WARNING"`` -> {logger name: level}; raises ValueError on junk."""
    levels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        numeric = logging.getLevelName(value.strip().upper())
        if not sep or not name.strip() or not isinstance(numeric, int):
            raise ValueError(f"not LOGGER=LEVEL: {item!r}")
        levels[name.strip()] = numeric
    return levels


def configure(level: str = "INFO", fmt: str = "text", levels: str = "") -> None:
    """``levels`` (CHATMQ_LOG_LEVELS) sets per-component levels over the global one, for example
    ``chatmq.broker.hooks.admin=DEBUG,chatmq.bridge=WARNING``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                          rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"})
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    for name, numeric in parse_levels(levels).items():
        logging.getLogger(name).setLevel(numeric)
