"""chatmq.core.access's rule table as Mosquitto dynamic-security roles: one role per user.

Mosquitto cannot call Python, so the sync gives each user a role with an ACL for every grant the
table derives for it (``chatmq.core.access.grants``: the topics of its conversations, its own
ack/events/presence/history topics, the presence of the users it shares a conversation with).
The default ACL access denies everything else. tests/mosquitto_broker/test_rules_parity.py checks,
against a live Mosquitto, that it answers the table's cases as ``chatmq.core.access.authorize`` does.

What ACLs cannot say: a last will is checked by Mosquitto against the publish ACLs, so a device
may leave a will on any topic it may publish (the table allows only ``presence/{me}/{device}``);
``+`` in an ACL matches any level, valid id or not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chatmq.core.access import Action, grants
from chatmq.core.config import SERVICE_USER
from chatmq.core.store.base import User

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


def user_acls(user: str, convs: Iterable[str], peers: Iterable[str]) -> frozenset[Acl]:
    """The table's grants for ``user`` as ACLs; a will needs no ACL of its own (see above)."""
    acls: set[Acl] = set()
    for grant in grants(user, convs, peers):
        if grant.action is Action.PUBLISH:
            acls.add(Acl(SEND, grant.topic))
        elif grant.action is Action.RECEIVE:
            acls.add(Acl(RECEIVE, grant.topic))
        elif grant.action is Action.SUBSCRIBE:
            acls.add(Acl(SUB_PATTERN if "+" in grant.topic else SUB_LITERAL, grant.topic))
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
