"""A small blocking paho client for talking to RabbitMQ's MQTT listener in tests."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.rabbitmq import PASSWORD, USER, RabbitNode


class Device:
    """Connects (clean or persistent session), subscribes, publishes QoS 1 and waits for PUBACK;
    received messages land in ``inbox``."""

    def __init__(self, node: RabbitNode, client_id: str, *, clean: bool = True,
                 username: str = USER, password: str = PASSWORD) -> None:
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.username_pw_set(username, password)
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: rc == 0 and self.connected.set()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.connect(node.host, node.mqtt_port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            self.close()
            raise TimeoutError(f"{client_id} did not connect to {node.node}")

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        if not self.subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic}")

    def receive(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        return self.inbox.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
