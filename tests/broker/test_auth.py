"""CONNECT: credentials, tokens, the service identity and last-will topics."""

from __future__ import annotations

import pytest

from chatmq.core.config import SERVICE_USER
from chatmq.core.protocol import device_presence_topic
from tests.broker.conftest import PASSWORDS, BrokerProcess, Clients
from tests.broker.mqtt import NOT_AUTHORIZED

pytestmark = pytest.mark.timeout(60)


def test_password_login(clients: Clients) -> None:
    assert clients.make("alice", PASSWORDS["alice"]).connect() == 0


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong"),  # wrong password
        ("zoe", "whatever"),  # unknown user
        ("dave", PASSWORDS["dave"]),  # disabled user
        (None, None),  # no credentials at all
        ("alice", ""),  # username without password
        (SERVICE_USER, "a-password"),  # the service identity only logs in with a service token
    ],
)
def test_refused_logins(clients: Clients, broker: BrokerProcess, username: str | None, password: str | None) -> None:
    assert clients.make(username, password).connect() == NOT_AUTHORIZED
    assert "refused login" in broker.log()


def test_refused_login_is_logged_without_the_password(clients: Clients, broker: BrokerProcess) -> None:
    assert clients.make("alice", "a-very-distinctive-wrong-password").connect() == NOT_AUTHORIZED
    log = broker.log()
    assert "user='alice'" in log
    assert "a-very-distinctive-wrong-password" not in log


def test_token_login(clients: Clients, broker: BrokerProcess) -> None:
    assert clients.make("alice", broker.token("alice")).connect() == 0
    # a token is bound to its user, and a disabled user's token stops working
    assert clients.make("bob", broker.token("alice")).connect() == NOT_AUTHORIZED
    assert clients.make("dave", broker.token("dave")).connect() == NOT_AUTHORIZED
    assert clients.make("alice", broker.token("alice", ttl_s=-10)).connect() == NOT_AUTHORIZED


def test_service_login(clients: Clients, broker: BrokerProcess) -> None:
    assert clients.make(SERVICE_USER, broker.token(SERVICE_USER, service=True)).connect() == 0
    # a device token does not make its holder the service, nor does a service token a device
    assert clients.make(SERVICE_USER, broker.token(SERVICE_USER)).connect() == NOT_AUTHORIZED
    assert clients.make("alice", broker.token("alice", service=True)).connect() == NOT_AUTHORIZED


@pytest.mark.parametrize("will_topic", ["chat/c1/msg", "presence/bob/x", "presence/alice", "user/alice/ack", "foo"])
def test_will_topic_abuse_is_refused(clients: Clients, broker: BrokerProcess, will_topic: str) -> None:
    client = clients.make("alice", PASSWORDS["alice"], will=(will_topic, b'{"forged": true}'))
    assert client.connect() == NOT_AUTHORIZED
    assert f"will topic {will_topic!r} not allowed" in broker.log()


def test_valid_will_is_published_on_abrupt_close(clients: Clients) -> None:
    watcher = clients.service()
    assert watcher.subscribe("presence/+/+") == 1
    topic = device_presence_topic("alice", "phone")
    will = b'{"status": "offline", "conn": "k1"}'
    device = clients.make("alice", PASSWORDS["alice"], will=(topic, will))
    assert device.connect() == 0
    device.drop()
    got = watcher.expect(timeout=5)
    assert (got.topic, got.payload) == (topic, will)


def test_service_may_set_any_will(clients: Clients) -> None:
    client = clients.make(
        SERVICE_USER, clients.broker.token(SERVICE_USER, service=True), will=("chatmq/bridge/down", b"1")
    )
    assert client.connect() == 0
