"""The session guard on a private RabbitMQ node: what RabbitMQ granted before a change stops at once.

RabbitMQ checks a subscription once, when the session queue is bound. Here a removed member's live
subscription and a persistent session's offline queue are unbound by the guard before the API's
DELETE answers (the guard reports its version like chatmq's brokers do), while the members who
stay keep receiving; a revoked token closes the user's connections.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatmq.adapters.rabbitmq.sessions import Binding, Management, SessionGuard, run
from chatmq.core.auth import hash_password
from chatmq.core.clientids import ClientIds
from chatmq.core.redisconn import connect as redis_connect
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store
from tests.rabbit.hooked import HookedRabbit, hooked_rabbit
from tests.rabbitmq import PASSWORD as ADMIN_PASSWORD
from tests.rabbitmq import USER as ADMIN_USER
from tests.stack import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PASSWORD = "guard-pw-1"


def _seed(store: Store) -> None:
    for user in ("alice", "bob", "carol"):
        store.create_user(user, hash_password(PASSWORD))
    store.create_conversation("c1", ["alice", "bob", "carol"], owner="alice")
    store.create_conversation("c2", ["alice", "bob"], owner="alice")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: object) -> Iterator[HookedRabbit]:
    data_dir: Path = tmp_path_factory.mktemp("rabbit-guard")
    with hooked_rabbit(data_dir, redis_server.url, _seed, membership_refresh_s=0.2,  # type: ignore[attr-defined]
                       membership_apply_timeout_s=5.0) as world:  # fmt: skip
        yield world


class CountingManagement(Management):
    """Counts the management calls a pass makes: sweeps, and the client ids whose queues were read."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.sweeps = 0
        self.read: list[str] = []

    def session_bindings(self) -> list[Binding]:
        self.sweeps += 1
        return super().session_bindings()

    def client_bindings(self, client_id: str) -> list[Binding]:
        self.read.append(client_id)
        return super().client_bindings(client_id)


@pytest.fixture(scope="module")
def guard(world: HookedRabbit) -> Iterator[SessionGuard]:
    redis_client = redis_connect(world.settings.redis_url)
    management = CountingManagement(f"http://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{world.node.management_port}",
                            world.settings.rabbitmq_vhost, world.settings.rabbitmq_exchange)  # fmt: skip
    guard = SessionGuard(management, world.store, ClientIds(redis_client))
    stop = threading.Event()
    passes: queue.Queue[tuple[int, int]] = queue.Queue()
    thread = threading.Thread(target=run, args=(guard, redis_client, "rabbitmq-guard-test", stop),
                              kwargs={"refresh_s": 0.2, "on_pass": lambda *p: passes.put(p)}, daemon=True)  # fmt: skip
    thread.start()
    passes.get(timeout=30)  # the first pass is done: the guard reports its version
    yield guard
    stop.set()
    thread.join(10)
    management.close()
    redis_client.close()


def _api(world: HookedRabbit) -> httpx.Client:
    return httpx.Client(base_url=world.api_url, timeout=30)


def _token(api: httpx.Client, user: str) -> str:
    response = api.post("/v1/auth/token", json={"username": user, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"])


def _device(world: HookedRabbit, user: str, client_id: str, password: str = PASSWORD, **kwargs: object) -> RawClient:
    client = RawClient(world.node.mqtt_port, user, password, client_id=client_id, **kwargs)  # type: ignore[arg-type]
    assert not client.refused
    return client


def _got(client: RawClient, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
    try:
        while True:
            got = client.received.get(timeout=timeout)
            if got == (topic, payload):
                return True
    except queue.Empty:
        return False


def test_a_removed_member_stops_receiving_before_the_api_answers(world: HookedRabbit, guard: SessionGuard) -> None:
    user, token = world.service_login()
    service = _device(world, user, "guard-service", token)
    bob_live = _device(world, "bob", "bob.phone")
    carol = _device(world, "carol", "carol.phone")
    for client in (bob_live, carol):
        assert client.subscribe("chat/c1/msg") and client.subscribe("chat/c1/typing/+")
    assert bob_live.subscribe("presence/carol")
    # bob's tablet: a persistent session, offline while the removal happens
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    tablet = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bob.tablet", clean_session=False)
    tablet.username_pw_set("bob", PASSWORD)
    tablet.connect("127.0.0.1", world.node.mqtt_port)
    tablet.loop_start()
    subscribed = threading.Event()
    tablet.on_subscribe = lambda *_: subscribed.set()
    tablet.subscribe("chat/c1/msg", 1)
    assert subscribed.wait(10)
    tablet.disconnect()
    tablet.loop_stop()

    service.publish("chat/c1/msg", b"before")
    assert _got(bob_live, "chat/c1/msg", b"before") and _got(carol, "chat/c1/msg", b"before")

    management = guard.management
    assert isinstance(management, CountingManagement)
    sweeps = management.sweeps
    management.read.clear()
    with _api(world) as api:
        removed = api.delete("/v1/conversations/c1/members/bob",
                             headers={"Authorization": f"Bearer {_token(api, 'alice')}"})  # fmt: skip
    assert removed.status_code == 204
    # The pass read the queues of the users the change concerns only (bob, and carol who shares
    # nothing with bob any more; not alice, who still shares c2), not every binding of the exchange.
    assert management.sweeps == sweeps
    # (client ids an earlier test of this module claimed for bob or carol are theirs too)
    assert {"bob.phone", "bob.tablet", "carol.phone"} <= set(management.read), management.read
    assert all(cid.split(".")[0] in ("bob", "carol") for cid in management.read), management.read

    service.publish("chat/c1/msg", b"after")
    alice = _device(world, "alice", "alice.phone")
    assert alice.publish_acked("chat/c1/typing/alice", b'{"typing": true}')
    assert _got(carol, "chat/c1/msg", b"after") and _got(carol, "chat/c1/typing/alice", b'{"typing": true}')
    assert not _got(bob_live, "chat/c1/msg", b"after", timeout=1.0)
    assert not _got(bob_live, "chat/c1/typing/alice", b'{"typing": true}', timeout=0.5)
    # bob still shares c2 with alice but no conversation with carol: her presence is unbound too
    service.publish("presence/carol", b"online")
    assert not _got(bob_live, "presence/carol", b"online", timeout=1.0)

    # The tablet resumes its session: what was queued before the removal, nothing after.
    resumed: queue.Queue[bytes] = queue.Queue()
    tablet = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bob.tablet", clean_session=False)
    tablet.username_pw_set("bob", PASSWORD)
    tablet.on_message = lambda _c, _u, m: resumed.put(m.payload)
    tablet.connect("127.0.0.1", world.node.mqtt_port)
    tablet.loop_start()
    try:
        assert resumed.get(timeout=10) == b"before"
        with pytest.raises(queue.Empty):
            resumed.get(timeout=2)
    finally:
        tablet.disconnect()
        tablet.loop_stop()
    for client in (service, bob_live, carol, alice):
        client.close()


def test_a_revoked_token_closes_the_users_connections(world: HookedRabbit, guard: SessionGuard) -> None:
    with _api(world) as api:
        token = _token(api, "carol")
    carol = _device(world, "carol", "carol.laptop", password=token)
    revocations = TokenRevocations(redis_connect(world.settings.redis_url), world.settings.token_ttl_s)
    revocations.revoke_user("carol")
    assert carol.lost.wait(10), "the guard did not close carol's connection"
    assert RawClient(world.node.mqtt_port, "carol", token, client_id="carol.laptop").refused
