"""chatmq end to end with a private RabbitMQ node as the broker: devices over MQTT and over
WebSocket (rabbitmq_web_mqtt), the real bridge process, the API (logins and access answered by it,
history), presence by last will.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatmq.cli.processes import terminate
from chatmq.clients import ChatClient
from chatmq.core.auth import hash_password
from chatmq.core.protocol import TopicKind
from chatmq.core.store import Store
from tests.rabbit.hooked import HookedRabbit, hooked_rabbit
from tests.stack import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PASSWORD = "rabbit-e2e-pw"


def _seed(store: Store) -> None:
    for user in ("alice", "bob", "carol"):
        store.create_user(user, hash_password(PASSWORD))
    store.create_conversation("team", ["alice", "bob"], owner="alice")
    store.create_conversation("pair", ["alice", "carol"], owner="alice")


@dataclass
class Chat:
    world: HookedRabbit
    bridge_log: Path

    def client(self, user: str, device: str = "phone", *, websocket: bool = False, **kwargs: Any) -> ChatClient:
        node = self.world.node
        if websocket:
            kwargs.update(transport="websockets", ws_path="/ws")
        return ChatClient(node.host, node.ws_port if websocket else node.mqtt_port, user, PASSWORD, device=device,
                          api_url=self.world.api_url, **kwargs).connect(timeout=20)  # fmt: skip

    def token(self, user: str) -> str:
        response = httpx.post(f"{self.world.api_url}/v1/auth/token", json={"username": user, "password": PASSWORD})
        response.raise_for_status()
        return str(response.json()["token"])


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[Chat]:
    data_dir: Path = tmp_path_factory.mktemp("rabbit-e2e")
    with hooked_rabbit(data_dir, redis_server.url, _seed, membership_refresh_s=0.2) as world:
        log_path = data_dir / "bridge.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env.update(CHATMQ_SECRET_KEY=world.settings.load_secret(), CHATMQ_DATA_DIR=str(data_dir),
                   CHATMQ_HEARTBEAT_INTERVAL_S="1")  # fmt: skip
        command = [sys.executable, "-m", "chatmq.cli", "bridge", "--store-url", world.settings.resolved_store_url,
                   "--redis-url", world.settings.redis_url, "--broker-host", world.node.host,
                   "--broker-port", str(world.node.mqtt_port)]  # fmt: skip
        with log_path.open("ab") as log:
            bridge = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Chat(world, log_path)
        finally:
            terminate(bridge)


def _next(client: ChatClient, kind: TopicKind, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        event = client.next_event(timeout)
        if event.kind is kind:
            return event.payload


def test_devices_over_mqtt_and_websocket(chat: Chat) -> None:
    with chat.client("alice") as alice, chat.client("bob", "browser", websocket=True) as bob:
        bob.join("team")
        ack = alice.send("team", "hello over rabbitmq", client_msg_id="r-1").result(30)
        assert (ack.status, ack.conv) == ("received", "team")
        delivered = _next(bob, TopicKind.MSG)
        assert (delivered["body"], delivered["seq"], delivered["sender"]) == ("hello over rabbitmq", ack.seq, "alice")
        reply = bob.send("team", "and back over websocket").result(30)
        alice.join("team")
        assert reply.seq == ack.seq + 1
        page = httpx.get(f"{chat.world.api_url}/v1/conversations/team/messages",
                         headers={"Authorization": f"Bearer {chat.token('bob')}"}).json()  # fmt: skip
        assert [m["body"] for m in page["messages"]][-2:] == ["hello over rabbitmq", "and back over websocket"]


def test_a_non_member_cannot_send_or_listen(chat: Chat) -> None:
    carol = RawClient(chat.world.node.mqtt_port, "carol", PASSWORD, client_id="carol.phone")
    try:
        assert not carol.subscribe("chat/team/msg")
        assert carol.lost.wait(5), "RabbitMQ closes a connection whose subscription it refused"
    finally:
        carol.close()
    spoof = RawClient(chat.world.node.mqtt_port, "carol", PASSWORD, client_id="carol.tablet")
    try:
        assert not spoof.publish_acked("chat/team/send/carol", b'{"body": "let me in"}', timeout=5)
        assert spoof.lost.is_set(), "RabbitMQ closes a connection whose publish it refused"
    finally:
        spoof.close()


def test_presence_by_last_will(chat: Chat) -> None:
    watcher = RawClient(chat.world.node.mqtt_port, "bob", PASSWORD, client_id="bob.watcher")
    try:
        assert watcher.subscribe("presence/alice")
        device = chat.client("alice", "laptop", heartbeat_interval=1.0)
        online = json.loads(watcher.expect("presence/alice", timeout=10))
        while online["status"] != "online":  # a retained offline from earlier may come first
            online = json.loads(watcher.expect("presence/alice", timeout=10))
        token = chat.token("bob")
        presence = httpx.get(f"{chat.world.api_url}/v1/presence/alice", headers={"Authorization": f"Bearer {token}"})
        assert presence.json()["status"] == "online"
        device.close(abrupt=True)  # no DISCONNECT: RabbitMQ publishes the will
        offline = json.loads(watcher.expect("presence/alice", timeout=10))
        assert offline["status"] == "offline"
        presence = httpx.get(f"{chat.world.api_url}/v1/presence/alice", headers={"Authorization": f"Bearer {token}"})
        assert presence.json()["status"] == "offline"
    finally:
        watcher.close()


def test_a_removed_member_s_client_leaves_and_keeps_its_connection(chat: Chat) -> None:
    """On RabbitMQ a refused subscription closes the connection: the client library leaves a
    conversation it was removed from (``conversation_removed``), so a reconnect never asks again."""
    with chat.client("carol", "phone") as carol:
        carol.subscribe("user/carol/events")
        carol.join("pair")
        removed = httpx.delete(f"{chat.world.api_url}/v1/conversations/pair/members/carol",
                               headers={"Authorization": f"Bearer {chat.token('alice')}"})  # fmt: skip
        assert removed.status_code == 204
        event = _next(carol, TopicKind.EVENTS)
        while event.get("event") != "conversation_removed":
            event = _next(carol, TopicKind.EVENTS)
        assert "pair" not in carol.joined()
        changes: list[bool] = []
        carol.on_connection(lambda up, _reason: changes.append(up))
        carol._mqtt.reconnect()  # a reconnect subscribes what is joined: no refusal, so no close
        deadline = time.monotonic() + 10
        while True not in changes:
            assert time.monotonic() < deadline, "carol did not connect again"
            time.sleep(0.05)
        time.sleep(2.0)  # RabbitMQ would have closed it by now had a subscription been refused
        assert changes.count(False) <= 1 and changes[-1] is True and carol.connected
