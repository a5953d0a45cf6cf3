"""MQTT topics as RabbitMQ 3.10's MQTT plugin routes them, and back.

The plugin publishes an MQTT topic on its topic exchange with the routing key made by turning each
``/`` into ``.`` and binds a subscription's filter with ``+`` as ``*`` (``#`` stays ``#``). A ``.``
inside a topic level is *not* escaped: ``chat/c.1/msg`` becomes ``chat.c.1.msg`` and is delivered
back as ``chat/c/1/msg`` (seen on this machine's 3.10.8). Ids with dots are refused on RabbitMQ
(docs/brokers.md).
"""

from __future__ import annotations

import re

SESSION_QUEUE_PREFIX = "mqtt-subscription-"
_SESSION_QUEUE = re.compile(re.escape(SESSION_QUEUE_PREFIX) + r"(?P<client_id>.+)qos[01]")


def topic_of(routing_key: str) -> str:
    """The MQTT topic or filter a routing key or binding key stands for (``*`` words as ``+``)."""
    return "/".join("+" if word == "*" else word for word in routing_key.split("."))


def session_client_id(queue: str) -> str | None:
    """The client id whose session queue ``queue`` is (``mqtt-subscription-{id}qos0|qos1``)."""
    match = _SESSION_QUEUE.fullmatch(queue)
    return match["client_id"] if match else None
