"""How the tests call chatmq's RabbitMQ auth hooks the way RabbitMQ 3.10 does (chatmq/api/brokerhooks/rabbitmq.py)."""

from __future__ import annotations

HOOK_AUTH = ("rabbitmq", "rabbitmq-hook-secret-0123456789")  # Basic auth: RabbitMQ sends the URL's user info


def routing_key(topic: str) -> str:
    """The routing (or binding) key RabbitMQ's MQTT plugin makes of a topic (or filter)."""
    return ".".join("*" if level == "+" else level for level in topic.split("/"))
