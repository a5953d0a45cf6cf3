"""What can go wrong between the bridge and its broker: one small family, all ``MqttError``."""

from __future__ import annotations


class MqttError(Exception):
    """Base of every error the bridge's MQTT client raises or reports."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero return code (3.1.1 section 3.2.2.3)."""

    REASONS = {
        1: "unacceptable protocol version",
        2: "identifier rejected",
        3: "server unavailable",
        4: "bad user name or password",
        5: "not authorized",
    }

    def __init__(self, return_code: int) -> None:
        super().__init__(f"CONNACK {return_code}: {self.REASONS.get(return_code, 'unknown return code')}")
        self.return_code = return_code


class ConnectionLost(MqttError):
    """The connection ended: closed by the broker, a network error, or no answer to a ping."""


class ProtocolError(MqttError):
    """The broker sent bytes that are not valid MQTT 3.1.1, or a packet out of place."""
