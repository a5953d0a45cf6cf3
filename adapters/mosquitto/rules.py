"""chatcore.access's rules, written out as Mosquitto dynamic-security roles and ACLs.

Mosquitto cannot call Python, so the sync turns the one authorization function's rules into
concrete ACLs per user: one role per user listing the topics of the conversations it belongs to,
its own ack/events/presence/history topics and the presence of the users it shares a conversation
with.
The default ACL access denies everything else. tests/mosquitto_broker checks, against a live
Mosquitto, that it answers exactly as ``chatcore.access.authorize`` does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chatcore.config import SERVICE_USER
from chatcore.protocol import (
    ack_topic,
    device_presence_topic,
    events_topic,
    history_request_topic,
    history_response_topic,
    msg_topic,
    presence_topic,
    receipt_topic,
    receipts_topic,
    send_topic,
    typing_topic,
)
from chatcore.store.base import User

MANAGED = "chatmq"  # the textname of every client the sync owns (it deletes only those)
ROLE_PREFIX = "chatmq-"
SERVICE_ROLE = "chatmq-service"

SEND = "publishClientSend"
RECEIVE = "publishClientReceive"
SUB_LITERAL = "subscribeLiteral"
SUB_PATTERN = "subscribePattern"

# Everything not granted is denied; unsubscribing is always harmless.
DEFAULT_ACL_ACCESS = [
    {"acltype": SEND, "allow": False},
    {"acltype": RECEIVE, "allow": False},
    {"acltype": "subscribe", "allow": False},
    {"acltype": "unsubscribe", "allow": True},
]


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    acltype: str
    topic: str


@dataclass(frozen=True, slots=True)
class ClientSpec:
    disabled: bool
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class State:
    """Clients and roles as chatmq wants them (or as Mosquitto has them, for the sync's diff)."""

    clients: Mapping[str, ClientSpec]
    roles: Mapping[str, frozenset[Acl]]


def user_role(user: str) -> str:
    return f"{ROLE_PREFIX}user-{user}"


SERVICE_ACLS = frozenset({Acl(SEND, "#"), Acl(RECEIVE, "#"), Acl(SUB_PATTERN, "#")})


def _readable(acl_topics: Iterable[tuple[str, str]]) -> set[Acl]:
    """A topic a user may read is one it may subscribe to and have delivered."""
    acls: set[Acl] = set()
    for sub_type, topic in acl_topics:
        acls.add(Acl(sub_type, topic))
        acls.add(Acl(RECEIVE, topic))
    return acls


def user_acls(user: str, convs: Iterable[str], peers: Iterable[str]) -> frozenset[Acl]:
    """What ``authorize`` allows ``user``, given its conversations and the users it shares one with.

    Wildcards: ``+`` in an ACL matches any level, valid id or not; devices are only ever granted
    ``+`` where the rule itself has one (``chat/{conv}/typing/+`` and ``presence/{user}/+``).
    """
    acls = _readable([
        (SUB_LITERAL, ack_topic(user)),
        (SUB_LITERAL, events_topic(user)),
        (SUB_LITERAL, presence_topic(user)),
        (SUB_LITERAL, history_response_topic(user)),
        (SUB_PATTERN, device_presence_topic(user, "+")),
    ])
    acls |= {Acl(SEND, device_presence_topic(user, "+")), Acl(SEND, history_request_topic(user))}
    for conv in convs:
        acls |= _readable([
            (SUB_LITERAL, msg_topic(conv)),
            (SUB_LITERAL, receipts_topic(conv)),
            (SUB_PATTERN, typing_topic(conv, "+")),
        ])
        acls |= {Acl(SEND, send_topic(conv, user)), Acl(SEND, typing_topic(conv, user)),
                 Acl(SEND, receipt_topic(conv, user))}
    for peer in peers:
        acls |= _readable([(SUB_LITERAL, presence_topic(peer))])
    return frozenset(acls)


def desired_state(users: Iterable[User], memberships: Mapping[str, Iterable[str]]) -> State:
    """The whole dynamic-security state for the store's users and memberships, plus the service."""
    convs_of: defaultdict[str, set[str]] = defaultdict(set)
    for conv, members in memberships.items():
        for member in members:
            convs_of[member].add(conv)
    clients = {SERVICE_USER: ClientSpec(False, frozenset({SERVICE_ROLE}))}
    roles = {SERVICE_ROLE: SERVICE_ACLS}
    for user in users:
        convs = convs_of.get(user.id, set())
        peers = {peer for conv in convs for peer in memberships[conv]} - {user.id}
        clients[user.id] = ClientSpec(user.disabled, frozenset({user_role(user.id)}))
        roles[user_role(user.id)] = user_acls(user.id, sorted(convs), sorted(peers))
    return State(clients, roles)
