"""The amqtt configuration for one chatmq broker, built from Settings.

Only chatmq's plugins are listed: listing plugins replaces amqtt's defaults (event and packet
loggers, $SYS), which spawn a task per packet and cost about a third of relay throughput, and the
anonymous-auth plugin, which would let anyone in.
"""

from __future__ import annotations

from typing import Any

from broker.services import BrokerServices
from chatcore.config import Settings

AUTH_PLUGIN = "broker.plugins.auth.ChatAuthPlugin"
ACL_PLUGIN = "broker.plugins.acl.ChatAclPlugin"


def build_config(settings: Settings, services: BrokerServices) -> dict[str, Any]:
    """``default`` must stay plain TCP: every other listener inherits from it the fields it leaves
    at their defaults (a TLS ``default`` would make the WebSocket listener TLS too)."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{settings.host}:{settings.mqtt_port}"},
            "ws": {"type": "ws", "bind": f"{settings.host}:{settings.ws_port}"},
        },
        # amqtt expires disconnected persistent sessions after this; Redis keys expire alike
        "session_expiry_interval": settings.session_expiry_s,
        "plugins": {
            AUTH_PLUGIN: {"services": services},
            ACL_PLUGIN: {"services": services},
        },
    }
