"""Client library for chatmq devices (paho-mqtt based)."""

from clients.chat import Ack, ChatClient, ConnectRefused, Event

__all__ = ["Ack", "ChatClient", "ConnectRefused", "Event"]
