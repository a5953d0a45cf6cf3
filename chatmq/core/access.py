"""Who may publish, subscribe to, receive and leave a last will on which topic: chatmq's rule table.

``RULES`` is the one place the access rules are written: one line per topic, saying who besides
the service identity (the bridge, which may do anything) may publish there, read it (subscribe and
have it delivered) and use it as a last will. Everything else is derived from it:

- ``authorize()``, the decision the amqtt broker's hooks, the EMQX and RabbitMQ HTTP hooks make;
- the Mosquitto dynamic-security ACLs (``grants()``, turned into roles by chatmq/adapters/mosquitto);
- the access tables of docs/protocol.md (``describe()``; tests/test_protocol_doc.py compares).

Adding a topic is one line in ``RULES`` (after its builder in chatmq.core.protocol). Outside the table
(any topic whose first level is not one of the table's) everything is denied, unless the deployment
opens those topics as plain MQTT (``open_outside``: the ``allow_anonymous`` setting).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatmq.core import control
from chatmq.core.config import ADMIN_USER, SERVICE_USER
from chatmq.core.ids import is_valid_id
from chatmq.core.protocol import (
    NAMESPACES,
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


class Action(enum.Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"  # the topic is a filter and may hold wildcards
    RECEIVE = "receive"  # a concrete topic about to be delivered to a subscriber
    WILL = "will"  # the last will a client leaves at CONNECT, published by the broker for it


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated MQTT or HTTP principal."""

    user: str
    is_service: bool = False
    is_admin: bool = False  # the operator: the admin channel only (chatmq.core.control), no chat topics


def logged_in_identity(user: str) -> Identity:
    """The identity behind a user name a broker logged in through chatmq (``chatcore.logins``), as
    the HTTP hooks and the RabbitMQ session guard see it. ``@`` is outside the user-id alphabet:
    only a login with the service's or the admin's token gets these names."""
    return Identity(user=user, is_service=user == SERVICE_USER, is_admin=user == ADMIN_USER)


class Membership:
    """The questions access control asks about conversations; implemented by a cached view."""

    def is_member(self, conv: str, user: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def shares_conversation(self, user: str, other: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class Who(enum.Enum):
    """Who, besides the service identity, may act on a topic; the value is how the docs say it."""

    NOBODY = "never"
    SELF = "`{user}` = `me`"
    MEMBER = "`me` is a member of `{conv}`"
    SELF_MEMBER = "`{user}` = `me` and `me` is a member of `{conv}`"
    SELF_OR_PEER = "`{user}` = `me`, or `me` shares a conversation with `{user}`"
    ADMIN = "the admin identity"

    @property
    def binds(self) -> frozenset[str]:
        """The topic levels the condition names (the others may hold anything, or ``+``)."""
        return _BINDS[self]


_BINDS = {
    Who.NOBODY: frozenset(), Who.ADMIN: frozenset(), Who.MEMBER: frozenset({"conv"}),
    Who.SELF: frozenset({"user"}), Who.SELF_OR_PEER: frozenset({"user"}),
    Who.SELF_MEMBER: frozenset({"user", "conv"}),
}

# What a placeholder level of a topic may hold.
_LEVEL_CHECKS: dict[str, Callable[[str], bool]] = {
    "conv": is_valid_id,
    "user": is_valid_id,
    "device": is_valid_id,
    "request": control.is_request_id,
}


@dataclass(frozen=True, slots=True)
class TopicRule:
    """One topic (its levels, ``{placeholders}`` for the variable ones) and who may do what there.

    ``wildcard`` names the one placeholder a reader may subscribe to as ``+`` (always the last
    level); the read condition must not depend on it. No other wildcard is granted to anyone but
    the service.
    """

    template: str
    publish: Who
    read: Who  # subscribe and receive
    will: Who = Who.NOBODY
    wildcard: str | None = None
    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # Per level: (None, the literal) or (the placeholder's name, its check).
    slots: tuple[tuple[str | None, Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(self.template.split("/"))
        object.__setattr__(self, "levels", levels)
        slots = []
        for level in levels:
            name = _placeholder(level)
            if name is not None and name not in _LEVEL_CHECKS:
                raise ValueError(f"{self.template}: unknown placeholder {level}")
            slots.append((None, level) if name is None else (name, _LEVEL_CHECKS[name]))
        object.__setattr__(self, "slots", tuple(slots))
        if self.wildcard is not None and (levels[-1] != "{" + self.wildcard + "}" or self.wildcard in self.read.binds):
            raise ValueError(f"{self.template}: the wildcard must be the last level, unnamed by the read rule")

    def match(self, levels: list[str], *, wildcard: bool = False) -> dict[str, str] | None:
        """The placeholders' values if ``levels`` is this topic (with ``+`` as the wildcard level
        when ``wildcard``), else None."""
        if len(levels) != len(self.levels):
            return None
        if wildcard and levels[-1] == "+" and self.wildcard is not None:
            levels = levels[:-1]
        values: dict[str, str] = {}
        for (name, literal_or_check), level in zip(self.slots, levels):  # noqa: B905 - levels may be one short
            if name is None:
                if level != literal_or_check:
                    return None
            elif literal_or_check(level):
                values[name] = level
            else:
                return None
        return values

    def who(self, action: Action) -> Who:
        if action is Action.PUBLISH:
            return self.publish
        if action is Action.WILL:
            return self.will
        return self.read

    def fill(self, values: Mapping[str, str]) -> str:
        """The topic with the given placeholders filled in and every other one as ``+``."""
        return "/".join(
            level if (name := _placeholder(level)) is None else values.get(name, "+") for level in self.levels
        )


def _placeholder(level: str) -> str | None:
    return level[1:-1] if level.startswith("{") and level.endswith("}") else None


# The rule table: one line per topic. Its order is the docs' order.
RULES: tuple[TopicRule, ...] = (
    TopicRule(send_topic("{conv}", "{user}"), publish=Who.SELF_MEMBER, read=Who.NOBODY),
    TopicRule(msg_topic("{conv}"), publish=Who.NOBODY, read=Who.MEMBER),
    TopicRule(typing_topic("{conv}", "{user}"), publish=Who.SELF_MEMBER, read=Who.MEMBER, wildcard="user"),
    TopicRule(receipt_topic("{conv}", "{user}"), publish=Who.SELF_MEMBER, read=Who.NOBODY),
    TopicRule(receipts_topic("{conv}"), publish=Who.NOBODY, read=Who.MEMBER),
    TopicRule(ack_topic("{user}"), publish=Who.NOBODY, read=Who.SELF),
    TopicRule(events_topic("{user}"), publish=Who.NOBODY, read=Who.SELF),
    TopicRule(history_request_topic("{user}"), publish=Who.SELF, read=Who.NOBODY),
    TopicRule(history_response_topic("{user}"), publish=Who.NOBODY, read=Who.SELF),
    TopicRule(device_presence_topic("{user}", "{device}"), publish=Who.SELF, read=Who.SELF, will=Who.SELF,
              wildcard="device"),
    TopicRule(presence_topic("{user}"), publish=Who.NOBODY, read=Who.SELF_OR_PEER),
    TopicRule(control.REQUEST_TOPIC, publish=Who.ADMIN, read=Who.NOBODY),
    TopicRule(control.response_topic("{request}"), publish=Who.NOBODY, read=Who.ADMIN, wildcard="request"),
    TopicRule(control.MEMBERSHIP_TOPIC, publish=Who.NOBODY, read=Who.NOBODY),  # the bridge's fence
)

# The first levels the table owns: nothing under them is open, whatever the deployment says.
RESERVED_HEADS = frozenset(rule.levels[0] for rule in RULES)

_BY_SHAPE: dict[tuple[str, int], list[TopicRule]] = defaultdict(list)
for _rule in RULES:
    _BY_SHAPE[(_rule.levels[0], len(_rule.levels))].append(_rule)


def find_rule(topic: str, *, wildcard: bool = False) -> tuple[TopicRule, dict[str, str]] | None:
    """The rule of a concrete topic (or, with ``wildcard``, of a filter with ``+`` as its rule's
    wildcard level) and its placeholders' values."""
    levels = topic.split("/")
    for rule in _BY_SHAPE.get((levels[0], len(levels)), ()):
        values = rule.match(levels, wildcard=wildcard)
        if values is not None:
            return rule, values
    return None


def is_open(topic: str, action: Action) -> bool:
    """Outside every topic of the table: plain MQTT when the deployment opens it. Only a filter
    may hold wildcards (one starting with a wildcard is open too: what it receives passes the
    per-delivery RECEIVE check, and no table topic does)."""
    if action is not Action.SUBSCRIBE and ("+" in topic or "#" in topic):
        return False
    return topic.split("/", 1)[0] not in RESERVED_HEADS


def authorize(
    identity: Identity | None,
    action: Action,
    topic: str,
    membership: Membership,
    *,
    open_outside: bool = False,
) -> bool:
    """Decide one access request from ``RULES``. ``identity`` None is an anonymous client.

    ``open_outside``: topics outside the table are plain MQTT for every client (``is_open``).
    Otherwise they are denied to all but the service.
    """
    if identity is not None and identity.is_service:
        return True
    if open_outside and is_open(topic, action):
        return True
    if identity is None:
        return False
    found = find_rule(topic, wildcard=action is Action.SUBSCRIBE)
    if found is None:
        return False
    rule, values = found
    return _holds(rule.who(action), identity, values, membership)


def _holds(who: Who, identity: Identity, values: Mapping[str, str], membership: Membership) -> bool:
    if who is Who.ADMIN:
        return identity.is_admin
    if who is Who.NOBODY or identity.is_admin:  # the admin opens no chat topic
        return False
    me = identity.user
    if who is Who.SELF:
        return values["user"] == me
    if who is Who.MEMBER:
        return membership.is_member(values["conv"], me)
    if who is Who.SELF_MEMBER:
        return values["user"] == me and membership.is_member(values["conv"], me)
    return values["user"] == me or membership.shares_conversation(me, values["user"])


# ---------------------------------------------------------------------------------------------
# The table as concrete grants, for brokers that take lists of topics (Mosquitto's ACLs).


@dataclass(frozen=True, slots=True)
class Grant:
    """One topic (``+`` where any value is allowed) a device user may act on."""

    action: Action
    topic: str


def grants(user: str, convs: Iterable[str], peers: Iterable[str]) -> frozenset[Grant]:
    """Everything ``authorize`` allows device user ``user``, given its conversations and the users
    it shares one with, as concrete topics. A level the rule leaves free is ``+``, which a broker
    matches against any value (valid id or not). Each read grant is a SUBSCRIBE and a RECEIVE."""
    convs, peers = sorted(convs), sorted(peers)
    out: set[Grant] = set()
    for rule in RULES:
        for action in (Action.PUBLISH, Action.SUBSCRIBE, Action.WILL):
            for values in _bindings(rule.who(action), user, convs, peers):
                topic = rule.fill(values)
                if action is Action.SUBSCRIBE:
                    out |= {Grant(Action.SUBSCRIBE, topic), Grant(Action.RECEIVE, topic)}
                else:
                    out.add(Grant(action, topic))
    return frozenset(out)


def _bindings(who: Who, user: str, convs: list[str], peers: list[str]) -> Iterator[dict[str, str]]:
    if who is Who.SELF:
        yield {"user": user}
    elif who is Who.MEMBER:
        yield from ({"conv": conv} for conv in convs)
    elif who is Who.SELF_MEMBER:
        yield from ({"user": user, "conv": conv} for conv in convs)
    elif who is Who.SELF_OR_PEER:
        yield from ({"user": who_} for who_ in (user, *peers))
    # NOBODY and ADMIN grant a device user nothing


# ---------------------------------------------------------------------------------------------
# The table in words, for docs/protocol.md.


def describe(action: Action, *, granted_only: bool = False) -> list[tuple[str, str]]:
    """(topic, who) rows for the docs: the rules of the chat namespaces (the admin channel has its
    own section), the read rows naming the wildcard filter a reader may use; ``granted_only``
    leaves out the topics nobody but the service may use."""
    rows = []
    for rule in RULES:
        who = rule.who(action)
        if rule.levels[0] not in NAMESPACES or (granted_only and who is Who.NOBODY):
            continue
        topic = f"`{rule.template}`"
        if action is Action.SUBSCRIBE and rule.wildcard is not None and who is not Who.NOBODY:
            topic += f" and `{rule.fill({k: '{' + k + '}' for k in who.binds})}`"
        rows.append((topic, "never: the server's only" if who is Who.NOBODY else who.value))
    return rows

