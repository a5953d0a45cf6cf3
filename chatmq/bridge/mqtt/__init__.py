"""The bridge's MQTT client: asyncio, on its own thread, framed by the project's one codec."""

from chatmq.bridge.mqtt.client import Message, MqttClient
from chatmq.bridge.mqtt.errors import ConnectionLost, ConnectRefused, MqttError, ProtocolError

__all__ = ["ConnectRefused", "ConnectionLost", "Message", "MqttClient", "MqttError", "ProtocolError"]
