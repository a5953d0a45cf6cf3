"""The amqtt configuration for one chatmq broker, built from Settings.

No amqtt plugin is listed: the broker calls its hooks directly (chatmq/broker/hooks), and an empty
``plugins`` replaces amqtt's defaults (event and packet loggers, $SYS: a task per packet, about a
third of relay throughput; the anonymous-auth plugin, which would let anyone in).
"""

from __future__ import annotations

from typing import Any

from chatmq.core.config import Settings


class TLSConfigError(ValueError):
    pass


def tls_listeners(settings: Settings) -> dict[str, dict[str, Any]]:
    """MQTT over TLS and over secure WebSocket, when their ports are set. Both need the cert and key;
    a missing file is refused here, at start-up, with a message naming the setting."""
    ports = {"tls": ("tcp", settings.mqtt_tls_port), "wss": ("ws", settings.ws_tls_port)}
    wanted = {name: spec for name, spec in ports.items() if spec[1]}
    if not wanted:
        return {}
    for option, path in (("CHATMQ_TLS_CERTFILE", settings.tls_certfile), ("CHATMQ_TLS_KEYFILE", settings.tls_keyfile)):
        if path is None or not path.is_file():
            raise TLSConfigError(f"a TLS listener is configured but {option} ({path}) is not a readable file")
    return {
        name: {"type": kind, "bind": f"{settings.host}:{port}", "ssl": True,
               "certfile": str(settings.tls_certfile), "keyfile": str(settings.tls_keyfile)}
        for name, (kind, port) in wanted.items()
    }  # fmt: skip


def build_config(settings: Settings) -> dict[str, Any]:
    """``default`` must stay plain TCP: every other listener inherits from it the fields it leaves
    at their defaults (a TLS ``default`` would make the WebSocket listener TLS too)."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{settings.host}:{settings.mqtt_port}"},
            "ws": {"type": "ws", "bind": f"{settings.host}:{settings.ws_port}"},
            **tls_listeners(settings),
        },
        # amqtt expires disconnected persistent sessions after this; Redis keys expire alike
        "session_expiry_interval": settings.session_expiry_s,
        "plugins": {},
    }
