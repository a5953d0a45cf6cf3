"""Client library for chatmq devices (paho-mqtt based). See chatmq/clients/README.md."""

from chatmq.clients.aio import AsyncChatClient
from chatmq.clients.chat import ChatClient
from chatmq.clients.events import Ack, AckTimeout, ConnectRefused, Event
from chatmq.clients.history import ApiError, HistoryClient, MqttHistory
from chatmq.clients.receipts import Marker
from chatmq.clients.timeline import Timeline

__all__ = [
    "Ack", "AckTimeout", "ApiError", "AsyncChatClient", "ChatClient", "ConnectRefused", "Event", "HistoryClient",
    "Marker", "MqttHistory", "Timeline",
]
