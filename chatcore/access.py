"""Who may publish, subscribe to and receive which topic: the one authorization function.

The amqtt plugins call it today; adapters for other brokers (EMQX hooks, Mosquitto dynamic
security) are meant to call the same function, so every broker enforces exactly these rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chatcore.control import is_control_response
from chatcore.ids import is_valid_id
from chatcore.protocol import NAMESPACES, TopicKind, parse_topic


class Action(enum.Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"  # the topic is a filter and may hold wildcards
    RECEIVE = "receive"  # a concrete topic about to be delivered to a subscriber


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated MQTT or HTTP principal."""

    user: str
    is_service: bool = False
    is_admin: bool = False  # the operator: the admin channel only (chatcore.control), no chat topics


class Membership:
    """The questions access control asks about conversations; implemented by a cached view."""

    def is_member(self, conv: str, user: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def shares_conversation(self, user: str, other: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


def in_namespace(topic: str) -> bool:
    """True if the topic (or filter) starts in one of chatmq's namespaces, or with a wildcard."""
    head = topic.split("/", 1)[0]
    return head in NAMESPACES or head in ("+", "#")


def authorize(identity: Identity, action: Action, topic: str, membership: Membership) -> bool:
    """Decide one access request. Outside the chat namespaces everything is denied.

    The service identity (the bridge) may do anything. A device user may only touch concrete
    topics of its own identity and conversations it belongs to; the only wildcard a device may use
    is the user level of ``chat/{conv}/typing/+`` and ``presence/{self}/+``.
    """
    if identity.is_service:
        return True
    if identity.is_admin:
        return action is not Action.PUBLISH and is_control_response(topic)
    user = identity.user
    if action is Action.SUBSCRIBE:
        return _may_subscribe(user, topic, membership)
    parsed = parse_topic(topic)
    if parsed is None:
        return False
    kind = parsed.kind
    if action is Action.PUBLISH:
        if kind in (TopicKind.SEND, TopicKind.TYPING, TopicKind.RECEIPT):
            return parsed.user == user and membership.is_member(parsed.conv or "", user)
        if kind in (TopicKind.DEVICE_PRESENCE, TopicKind.HISTORY_REQUEST):
            return parsed.user == user
        return False  # msg, receipts, ack, events, history responses and user presence: the server's
    return _may_read(user, parsed.kind, parsed.conv, parsed.user, membership)


def _may_read(
    user: str, kind: TopicKind, conv: str | None, owner: str | None, membership: Membership
) -> bool:
    if kind in (TopicKind.MSG, TopicKind.TYPING, TopicKind.RECEIPTS):
        return membership.is_member(conv or "", user)
    if kind in (TopicKind.ACK, TopicKind.EVENTS, TopicKind.DEVICE_PRESENCE, TopicKind.HISTORY_RESPONSE):
        return owner == user
    if kind is TopicKind.USER_PRESENCE:
        return owner == user or membership.shares_conversation(user, owner or "")
    return False  # send, receipt and history request topics are read by the service only


def _may_subscribe(user: str, topic_filter: str, membership: Membership) -> bool:
    levels = topic_filter.split("/")
    # The only wildcard allowed: a whole last level '+' under typing/ or presence/{self}/.
    if levels[-1] == "+" and len(levels) >= 2:
        prefix, last = levels[:-1], "+"
    else:
        prefix, last = levels, None
    if any("+" in level or "#" in level for level in prefix):
        return False
    if last is None:
        parsed = parse_topic(topic_filter)
        if parsed is None:
            return False
        return _may_read(user, parsed.kind, parsed.conv, parsed.user, membership)
    if len(prefix) == 3 and prefix[0] == "chat" and prefix[2] == "typing" and is_valid_id(prefix[1]):
        return membership.is_member(prefix[1], user)
    return len(prefix) == 2 and prefix[0] == "presence" and prefix[1] == user


