"""The one table of access cases every broker must answer alike, and the driver that asks a live one.

The expectations are written out by hand (not computed from chatmq.core.access.RULES), so a wrong
rule or a wrong derivation fails. The same cases run against ``authorize()`` directly and the EMQX
hook (tests/test_access_parity.py), chatmq's own broker live (tests/broker/test_rules_parity.py) and
a private Mosquitto fed by the sync (tests/mosquitto_broker/test_rules_parity.py).

World: alice, bob and carol share c1; alice and bob share c2; dave is alone in solo.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chatmq.core.access import Action, Membership
from chatmq.core.config import ADMIN_USER
from chatmq.core.control import MEMBERSHIP_TOPIC, REQUEST_TOPIC, RESPONSE_FILTER, response_topic
from chatmq.core.store import Store
from tests.stack import RawClient

PASSWORD = "device-pw-1"
USERS = ("alice", "bob", "carol", "dave")
CONVERSATIONS = {"c1": ("alice", "bob", "carol"), "c2": ("alice", "bob"), "solo": ("dave",)}

P, S, R, W = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE, Action.WILL


@dataclass(frozen=True, slots=True)
class Case:
    user: str
    action: Action
    topic: str
    allowed: bool


def _cases(user: str, action: Action, allowed: Iterable[str], denied: Iterable[str]) -> list[Case]:
    return [Case(user, action, t, True) for t in allowed] + [Case(user, action, t, False) for t in denied]


CASES: tuple[Case, ...] = tuple(
    _cases("alice", P, allowed=[
        "chat/c1/send/alice", "chat/c2/send/alice", "chat/c1/typing/alice", "chat/c1/receipt/alice",
        "presence/alice/phone", "user/alice/history/request",
    ], denied=[
        "chat/c1/send/bob", "chat/solo/send/alice", "chat/nosuch/send/alice", "chat/c1/typing/bob",
        "chat/solo/typing/alice", "chat/c1/receipt/bob", "chat/solo/receipt/alice", "chat/c1/msg",
        "chat/c1/receipts", "chat/c1/other", "user/alice/ack", "user/bob/ack", "user/alice/events",
        "user/alice/history/response", "user/bob/history/request", "user/alice/history/other",
        "presence/alice", "presence/bob/phone", "elsewhere/topic", "user/alice", "chat/c1",
        REQUEST_TOPIC, MEMBERSHIP_TOPIC, response_topic("r1"),
    ])
    + _cases("dave", P, allowed=["chat/solo/send/dave", "presence/dave/phone"],
             denied=["chat/c1/send/dave", "chat/c1/typing/dave"])
    + _cases("alice", S, allowed=[
        "chat/c1/msg", "chat/c2/msg", "chat/c1/receipts", "chat/c1/typing/+", "chat/c1/typing/bob",
        "user/alice/ack", "user/alice/events", "user/alice/history/response", "presence/alice/+",
        "presence/alice/phone", "presence/alice", "presence/bob", "presence/carol",
    ], denied=[
        "chat/solo/msg", "chat/nosuch/msg", "chat/solo/typing/+", "chat/solo/receipts",
        "chat/c1/send/alice", "chat/c1/send/+", "chat/c1/receipt/alice", "chat/c1/other",
        "user/bob/ack", "user/+/ack", "+/alice/ack", "user/bob/events", "user/alice/history/request",
        "user/alice/history/+", "user/+/history/response", "user/+/history/request", "user/alice/#",
        "presence/bob/+", "presence/bob/phone", "presence/dave", "presence/+", "chat/+/msg",
        "chat/c1/+", "chat/c1/#", "#", "elsewhere/topic", RESPONSE_FILTER, response_topic("r1"),
        MEMBERSHIP_TOPIC, "$CONTROL/#",
    ])
    + _cases("dave", S, allowed=["chat/solo/msg", "presence/dave"], denied=["chat/c1/msg", "presence/alice"])
    + _cases("alice", R, allowed=[
        "chat/c1/msg", "chat/c2/receipts", "chat/c1/typing/bob", "user/alice/ack", "user/alice/events",
        "user/alice/history/response", "presence/alice/phone", "presence/alice", "presence/carol",
    ], denied=[
        "chat/solo/msg", "chat/solo/typing/dave", "chat/c1/send/bob", "chat/c1/receipt/bob",
        "user/bob/ack", "user/bob/events", "user/bob/history/response", "user/alice/history/request",
        "presence/bob/phone", "presence/dave", "elsewhere/topic",
    ])
    + _cases("alice", W, allowed=["presence/alice/phone"], denied=[
        "presence/bob/phone", "presence/alice", "chat/c1/send/alice", "chat/c1/typing/alice",
        "user/alice/history/request", "chat/c1/msg", "elsewhere/topic",
    ])
    + _cases(ADMIN_USER, P, allowed=[REQUEST_TOPIC], denied=[response_topic("r1"), "chat/c1/send/alice"])
    + _cases(ADMIN_USER, S, allowed=[RESPONSE_FILTER, response_topic("r1")],
             denied=["$CONTROL/#", "chat/c1/msg", "#", REQUEST_TOPIC])
    + _cases(ADMIN_USER, R, allowed=[response_topic("r1")], denied=["chat/c1/msg"])
    + _cases(ADMIN_USER, W, allowed=[], denied=["presence/@admin/x", "chat/c1/msg"])
)


class WorldMembership(Membership):
    def is_member(self, conv: str, user: str) -> bool:
        return user in CONVERSATIONS.get(conv, ())

    def shares_conversation(self, user: str, other: str) -> bool:
        return any(user in members and other in members for members in CONVERSATIONS.values())


def seed(store: Store, password_hash: str) -> None:
    for user in USERS:
        store.create_user(user, password_hash)
    for conv, members in CONVERSATIONS.items():
        store.create_conversation(conv, list(members))


def will_checked_as_publish(case: Case) -> bool:
    """The table's answer on a broker that checks a last will as a publish (Mosquitto, RabbitMQ):
    a will is allowed wherever the same user may publish."""
    if case.action is Action.WILL:
        return any(other.allowed for other in CASES
                   if other.user == case.user and other.action is Action.PUBLISH and other.topic == case.topic)
    return case.allowed


def device_cases(action: Action) -> list[Case]:
    """The cases of device users (the admin channel exists on chatmq's own broker only)."""
    return [case for case in CASES if case.action is action and case.user in USERS]


# ---------------------------------------------------------------------------------------------
# Asking a live broker, through real MQTT clients


WILL_SETTLE_S = 1.0  # a lost connection's will is published at once; this is ample on a loaded machine
TYPING = b'{"typing": true}'  # a payload chatmq's broker lets through on typing topics too
Connect = Callable[..., RawClient]  # (user, password=PASSWORD, client_id=..., will=...) -> a client


def live_verdicts(connect: Connect, service_login: tuple[str, str], cases: Iterable[Case], *,
                  refusal_closes: bool = False) -> dict[Case, bool]:  # fmt: skip
    """What a live broker answers: SUBSCRIBE by SUBACK; PUBLISH by whether a service subscriber on
    ``#`` and ``$CONTROL/#`` sees it; RECEIVE by whether the user, having asked to subscribe to the
    topic, is delivered what the service publishes there; WILL by whether the observer sees the will
    once the connection is lost. ``refusal_closes``: the broker answers a refused publish or
    subscription by closing the connection (RabbitMQ), so each case gets a connection of its own."""
    verdicts: dict[Case, bool] = {}
    cases = list(cases)
    service = connect(*service_login, client_id="parity-service")
    observer = connect(*service_login, client_id="parity-observer")
    assert observer.subscribe("#") and observer.subscribe("$CONTROL/#")
    asks = ((S, _subscribes_each), (P, _publishes_each), (R, _receives_each), (W, _wills)) if refusal_closes \
        else ((S, _subscribes), (P, _publishes), (R, _receives), (W, _wills))
    for user in sorted({case.user for case in cases}):
        mine = [case for case in cases if case.user == user]
        for action, ask in asks:
            asked = [case for case in mine if case.action is action]
            if asked:
                verdicts.update(ask(connect, service if action is R else observer, user, asked))
    return verdicts


def _subscribes(connect: Connect, _service: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    client = connect(user, client_id=f"{user}-subscribes")
    return {case: client.subscribe(case.topic) for case in cases}


def _drain(client: RawClient, marker: str, timeout: float = 10.0) -> set[str]:
    """Topics received before ``marker`` arrives."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        topic, _ = client.received.get(timeout=max(0.1, deadline - time.monotonic()))
        if topic == marker:
            return seen
        seen.add(topic)


def _publishes(connect: Connect, observer: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    client = connect(user, client_id=f"{user}-publishes")
    for case in cases:
        client.publish(case.topic, TYPING)
    marker = f"presence/{user}/zz-end"  # allowed, and published last on the same connection
    client.publish(marker, b"end")
    arrived = _drain(observer, marker)
    return {case: case.topic in arrived for case in cases}


def _receives(connect: Connect, service: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    client = connect(user, client_id=f"{user}-receives")
    marker = f"presence/{user}/zz-end"  # no case's topic: allowed to read, delivered last
    assert client.subscribe(marker)
    for case in cases:
        with contextlib.suppress(queue.Empty):  # a broker that answers a refusal by closing
            client.subscribe(case.topic)
    for case in cases:
        service.publish(case.topic, b"x")
    service.publish(marker, b"end")
    arrived = _drain(client, marker)
    return {case: case.topic in arrived for case in cases}


def _subscribes_each(connect: Connect, _service: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    verdicts = {}
    for index, case in enumerate(cases):
        client = connect(user, client_id=f"{user}-subscribes-{index}")
        verdicts[case] = client.subscribe(case.topic)
        client.close()
    return verdicts


def _publishes_each(connect: Connect, observer: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    """Each publish on its own connection, acknowledged or refused before the next; the observer's
    queue holds every routed one before the marker published last."""
    for index, case in enumerate(cases):
        client = connect(user, client_id=f"{user}-publishes-{index}")
        client.publish_acked(case.topic, TYPING)
        client.close()
    marker = f"presence/{user}/zz-end"
    assert connect(user, client_id=f"{user}-publishes-end").publish_acked(marker, b"end")
    arrived = _drain(observer, marker)
    return {case: case.topic in arrived for case in cases}


def _receives_each(connect: Connect, service: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    """One receiver per case, each subscribed to a marker of its own, then to the case's topic (a
    refusal may close it: it then receives nothing)."""
    receivers = []
    for index, case in enumerate(cases):
        client = connect(user, client_id=f"{user}-receives-{index}")
        marker = f"presence/{user}/zz-end-{index}"
        assert client.subscribe(marker)
        client.subscribe(case.topic)
        receivers.append((case, client, marker))
    for case in cases:
        service.publish(case.topic, b"x")
    for _, _, marker in receivers:
        service.publish(marker, b"end")
    verdicts = {}
    for case, client, marker in receivers:
        verdicts[case] = not client.lost.is_set() and case.topic in _drain(client, marker)
        client.close()
    return verdicts


def _wills(connect: Connect, observer: RawClient, user: str, cases: list[Case]) -> dict[Case, bool]:
    """Each will is left at CONNECT and the connection then lost (no DISCONNECT): a broker that
    refuses the will refuses the CONNECT or never publishes it."""
    for index, case in enumerate(cases):
        client = connect(user, client_id=f"{user}-will-{index}", will=(case.topic, TYPING))
        if not client.refused:
            client.client.loop_stop()  # no reconnect, and no DISCONNECT: the connection is lost
            client.client.socket().close()  # type: ignore[union-attr]
    time.sleep(WILL_SETTLE_S)
    marker = f"presence/{user}/zz-end"
    connect(user, client_id=f"{user}-will-end").publish(marker, b"end")
    arrived = _drain(observer, marker)
    return {case: case.topic in arrived for case in cases}
