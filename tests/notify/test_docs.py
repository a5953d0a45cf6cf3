"""docs/protocol.md's push and webhook examples have the shape the code builds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chatmq.core import push, webhooks
from chatmq.core.store.base import EVENT_MEMBER_ADDED, ConversationEvent, Message, PushTarget

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _examples(section: str) -> list[dict]:
    start = DOC.index(f"## {section}\n")
    end = DOC.index("\n## ", start + 3)
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC[start:end], re.S)]


def test_notification_examples_match_the_builders() -> None:
    message, clear = _examples("Push notifications")
    target = PushTarget("bob", "phone", "fcm", "t")
    built = push.notification(push.message_draft(target, "team", "T", 42, "alice", "m", 1, "p", 3), 7, 3)
    assert set(message["notification"]) == set(built["notification"])
    assert set(message["notification"]["device"]) == set(built["notification"]["device"])
    assert message["notification"]["id"] == push.idempotency_key(message["notification"])
    built_clear = push.notification(push.clear_draft(target, "team", 42, 1), 0, 0)
    assert set(clear["notification"]) == set(built_clear["notification"])
    assert clear["notification"]["id"] == push.idempotency_key(clear["notification"])


def test_webhook_examples_match_the_builders() -> None:
    created, added = _examples("Webhooks")
    message = Message("team", 42, "6f1d", "alice", "m-2f9c1a", "hello, team", 1735689600123)
    built = webhooks.message_event(message)
    assert set(created) == set(built) and set(created["data"]) == set(built["data"])
    assert created["id"] == built["id"] and created["type"] == webhooks.MESSAGE_CREATED
    event = ConversationEvent(17, EVENT_MEMBER_ADDED, "team", "carol", "The team", ("alice",), 1)
    built = webhooks.conversation_event(event, ("alice", "bob", "carol"))
    assert added["id"] == built["id"] and added["type"] == built["type"] and set(added["data"]) == set(built["data"])
    for event_type in webhooks.EVENT_TYPES:
        assert f"`{event_type}`" in DOC
    for header in (webhooks.SIGNATURE_HEADER, webhooks.TIMESTAMP_HEADER, webhooks.DELIVERY_HEADER,
                   webhooks.EVENT_HEADER, webhooks.USER_AGENT):
        assert f"`{header}`" in DOC
