"""Client library for chatmq devices (paho-mqtt based). See clients/README.md."""

from clients.aio import AsyncChatClient
from clients.chat import ChatClient
from clients.events import Ack, ConnectRefused, Event
from clients.history import ApiError, HistoryClient, MqttHistory
from clients.receipts import Marker
from clients.timeline import Timeline

__all__ = [
    "Ack", "ApiError", "AsyncChatClient", "ChatClient", "ConnectRefused", "Event", "HistoryClient", "Marker",
    "MqttHistory", "Timeline",
]
