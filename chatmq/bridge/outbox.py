"""Everything the bridge sends to the broker goes through here, so shutdown can wait for it.

The MQTT client (chatmq/bridge/mqtt) keeps every QoS 1 publish in flight until the broker's PUBACK and
sends it again after a reconnect. The outbox encodes payloads once and hands out *marks*: a mark
taken after some publishes is confirmed once the broker acknowledged all of them, which is what
shutdown, a partition hand-over and the conversation events wait for.
"""

from __future__ import annotations

from typing import Any

from chatmq.bridge.mqtt import MqttClient
from chatmq.core.protocol import encode


class Outbox:
    def __init__(self, client: MqttClient) -> None:
        self._client = client

    def publish(self, topic: str, payload: dict[str, Any], qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, encode(payload), qos, retain)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK an inbound message (``Message.mid``): the broker may now forget it."""
        self._client.ack(mid, qos)

    def mark(self) -> int:
        """A mark of every QoS 1 publish made so far (see ``confirmed``)."""
        return self._client.mark()

    def confirmed(self, mark: int) -> bool:
        """True once the broker acknowledged every QoS 1 publish made before ``mark`` was taken."""
        return self._client.confirmed(mark)

    def wait_confirmed(self, mark: int, timeout: float) -> bool:
        return self._client.wait_confirmed(timeout, mark)

    def flush(self, timeout: float) -> bool:
        """Wait until the broker confirmed every QoS 1 publish; False if the timeout passed first."""
        return self._client.wait_confirmed(timeout)
