"""Push notifications, sans-IO: the JSON chatmq POSTs to the push gateway and its answer.

The gateway interface follows the Matrix push-gateway model: chatmq decides who is notified and
with what; a gateway the operator runs turns each notification into an FCM or APNs request
(``chatmq/pushgateway/`` is one) and answers which device tokens the provider refused for good, so
chatmq forgets them. One request per device; the ``id`` is the idempotency key (the same on a
retry), also sent as the ``Idempotency-Key`` header. docs/protocol.md, "Push gateway", is the
contract.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatmq.core.store.base import PushTarget

NOTIFY_MESSAGE = "message"  # something new in a conversation: show it (collapsed per conversation)
NOTIFY_CLEAR = "clear"  # the user read the conversation elsewhere: remove what was shown, update the badge
PREVIEW_CHARS = 140
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "chatmq-push/1"


def device_of(target: PushTarget) -> dict[str, Any]:
    return {"device": target.device, "platform": target.platform, "token": target.token, "app_id": target.app_id}


def message_draft(
    target: PushTarget, conv: str, title: str | None, seq: int, sender: str, message_id: str, ts: int,
    preview: str | None, collapsed: int,
) -> dict[str, Any]:  # fmt: skip
    """What the notifier stores for a message notification; counts are added when it is sent."""
    return {"type": NOTIFY_MESSAGE, "user": target.user, "conv": conv, "conv_title": title, "seq": seq,
            "sender": sender, "message_id": message_id, "ts": ts,
            "preview": None if preview is None else preview[:PREVIEW_CHARS], "collapse_key": conv,
            "collapsed": collapsed, "device": device_of(target)}  # fmt: skip


def clear_draft(target: PushTarget, conv: str, read_seq: int, ts: int) -> dict[str, Any]:
    return {"type": NOTIFY_CLEAR, "user": target.user, "conv": conv, "seq": read_seq, "ts": ts,
            "collapse_key": conv, "device": device_of(target)}  # fmt: skip


def idempotency_key(draft: dict[str, Any]) -> str:
    device = draft["device"]
    return f"{draft['user']}/{device['device']}:{draft['conv']}:{draft['seq']}:{draft['type']}"


def notification(draft: dict[str, Any], unread: int, conv_unread: int) -> dict[str, Any]:
    """The body POSTed to the gateway."""
    return {"notification": {"id": idempotency_key(draft), **draft,
                             "counts": {"unread": unread, "conv_unread": conv_unread}}}  # fmt: skip


def encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def rejected_tokens(answer: bytes) -> list[str]:
    """The gateway's ``{"rejected": [token, ...]}``: tokens the provider declared dead."""
    try:
        data = orjson.loads(answer) if answer else {}
    except orjson.JSONDecodeError:
        return []
    rejected = data.get("rejected") if isinstance(data, dict) else None
    return [t for t in rejected if isinstance(t, str)] if isinstance(rejected, list) else []


def erased(draft: dict[str, Any], conv: str, target: int) -> dict[str, Any] | None:
    """A logged notification without the preview of message ``target`` (deleted since). None: not about it."""
    if draft.get("conv") != conv or draft.get("seq") != target or draft.get("preview") is None:
        return None
    return {**draft, "preview": None}
