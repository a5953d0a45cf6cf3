"""The providers' request formats, sans-IO: from one chatmq notification to the exact FCM HTTP v1
or APNs request (method, URL, headers, body bytes), and from the provider's answer to a verdict.
tests/pushgateway/ checks these byte for byte against the providers' documented formats.

FCM HTTP v1: ``POST {endpoint}/v1/projects/{project_id}/messages:send`` with an OAuth 2.0 access
token (``Authorization: Bearer``) and ``{"message": {"token": ..., "notification": ...,
"data": {string: string}, "android": ...}}``; the access token comes from Google's token endpoint
for a JWT signed (RS256) by the service account, scope ``firebase.messaging``. A token the app no
longer owns is answered ``404 UNREGISTERED`` (or ``403 SENDER_ID_MISMATCH``).

APNs (token-based): ``POST {endpoint}/3/device/{token}`` over HTTP/2 with ``authorization: bearer
<JWT ES256 {kid} {iss: team id, iat}>``, ``apns-topic`` (the bundle id), ``apns-push-type``,
``apns-priority``, ``apns-collapse-id``, ``apns-id`` and ``apns-expiration``; body ``{"aps": ...}``
plus custom keys. A dead token is ``410 Unregistered``, ``400 BadDeviceToken`` or
``400 DeviceTokenNotForTopic``; an expired provider token is ``403 ExpiredProviderToken``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson

from chatmq.pushgateway.config import FCM_SCOPE, ApnsConfig, FcmConfig

OAUTH_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
OAUTH_LIFETIME_S = 3600
APNS_TOKEN_REFRESH_S = 50 * 60  # Apple: refresh at most every 20 min, tokens older than 60 min are refused
APNS_EXPIRATION_S = 24 * 3600  # APNs keeps an undeliverable notification this long (a phone off for a day)
_APNS_ID_NAMESPACE = uuid.UUID("8f6d0c1e-6a2b-4f0e-9a55-3c7c2b1d9e42")


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]  # in the order sent
    body: bytes


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    DEAD_TOKEN = "dead_token"  # the device token is gone for good: tell chatmq to forget it
    RETRY = "retry"  # the provider is busy or down: chatmq retries with back-off
    AUTH = "auth"  # our credentials token expired: refresh it and try once more
    REFUSED = "refused"  # the request is wrong (configuration): retrying will not help


def _title_and_body(note: dict[str, Any]) -> tuple[str, str]:
    sender, title, preview = note.get("sender") or "", note.get("conv_title"), note.get("preview")
    collapsed = int(note.get("collapsed") or 1)
    if preview is None:
        text = "New message" if collapsed <= 1 else f"{collapsed} new messages"
    else:
        text = f"{sender}: {preview}" if title else preview
    return (title or sender or "chatmq"), text


def _custom(note: dict[str, Any]) -> dict[str, str]:
    """chatmq's fields for the app, as strings (FCM's ``data`` takes only strings)."""
    fields = {"type": note["type"], "id": note["id"], "conv": note["conv"], "seq": str(note["seq"]),
              "unread": str(note["counts"]["unread"]), "conv_unread": str(note["counts"]["conv_unread"])}  # fmt: skip
    if note["type"] == "message":
        fields.update(sender=note["sender"], message_id=note["message_id"], collapsed=str(note["collapsed"]))
    return fields


# --- FCM -----------------------------------------------------------------------------------------


def fcm_message(note: dict[str, Any]) -> dict[str, Any]:
    """The ``message`` of an FCM HTTP v1 send: a notification (or, to clear, data only)."""
    conv, badge = note["conv"], int(note["counts"]["unread"])
    message: dict[str, Any] = {"token": note["device"]["token"], "data": _custom(note)}
    if note["type"] == "message":
        title, body = _title_and_body(note)
        message["notification"] = {"title": title, "body": body}
        message["android"] = {"collapse_key": conv, "priority": "high",
                              "notification": {"tag": conv, "notification_count": badge}}  # fmt: skip
    else:  # clear: a data message the app handles by cancelling the notification tagged ``conv``
        message["android"] = {"collapse_key": conv, "priority": "high"}
    return {"message": message}


def fcm_request(config: FcmConfig, note: dict[str, Any], access_token: str) -> ProviderRequest:
    return ProviderRequest(
        "POST", f"{config.endpoint}/v1/projects/{config.project_id}/messages:send",
        (("Authorization", f"Bearer {access_token}"), ("Content-Type", "application/json; UTF-8")),
        orjson.dumps(fcm_message(note)),
    )  # fmt: skip


def oauth_assertion(config: FcmConfig, now_s: int) -> str:
    """The service account's signed JWT that Google's token endpoint exchanges for an access token."""
    claims = {"iss": config.client_email, "scope": FCM_SCOPE, "aud": config.token_uri, "iat": now_s,
              "exp": now_s + OAUTH_LIFETIME_S}  # fmt: skip
    return jwt.encode(claims, config.private_key, algorithm="RS256")


def oauth_token_request(config: FcmConfig, assertion: str) -> ProviderRequest:
    return ProviderRequest(
        "POST", config.token_uri, (("Content-Type", "application/x-www-form-urlencoded"),),
        urlencode({"grant_type": OAUTH_GRANT, "assertion": assertion}).encode(),
    )  # fmt: skip


def fcm_verdict(status: int, body: bytes) -> Verdict:
    if 200 <= status < 300:
        return Verdict.DELIVERED
    error = _json(body).get("error", {})
    codes = {str(error.get("status", ""))} | {str(d.get("errorCode", "")) for d in error.get("details", [])
                                               if isinstance(d, dict)}  # fmt: skip
    if status == 404 or "UNREGISTERED" in codes or "SENDER_ID_MISMATCH" in codes:
        return Verdict.DEAD_TOKEN
    if status == 401:
        return Verdict.AUTH
    if status in (429, 500, 502, 503, 504):
        return Verdict.RETRY
    return Verdict.REFUSED


# --- APNs ----------------------------------------------------------------------------------------


def apns_payload(note: dict[str, Any]) -> dict[str, Any]:
    badge = int(note["counts"]["unread"])
    if note["type"] == "message":
        title, body = _title_and_body(note)
        aps: dict[str, Any] = {"alert": {"title": title, "body": body}, "badge": badge, "sound": "default",
                               "thread-id": note["conv"]}  # fmt: skip
    else:  # clear: a background push; the app removes the conversation's notifications
        aps = {"content-available": 1, "badge": badge}
    return {"aps": aps, "chatmq": _custom(note)}


def apns_id(note: dict[str, Any]) -> str:
    """A canonical UUID derived from chatmq's idempotency key: a retry carries the same apns-id."""
    return str(uuid.uuid5(_APNS_ID_NAMESPACE, note["id"]))


def apns_request(config: ApnsConfig, note: dict[str, Any], provider_token: str) -> ProviderRequest:
    alert = note["type"] == "message"
    topic = note["device"].get("app_id") or config.topic
    headers = (
        ("authorization", f"bearer {provider_token}"),
        ("apns-topic", topic),
        ("apns-push-type", "alert" if alert else "background"),
        ("apns-priority", "10" if alert else "5"),  # Apple: background pushes must use 5
        ("apns-collapse-id", note["conv"]),
        ("apns-id", apns_id(note)),
        ("apns-expiration", str(int(note["ts"]) // 1000 + APNS_EXPIRATION_S)),
        ("content-type", "application/json"),
    )
    return ProviderRequest("POST", f"{config.endpoint}/3/device/{note['device']['token']}", headers,
                           orjson.dumps(apns_payload(note)))  # fmt: skip


def apns_provider_token(config: ApnsConfig, now_s: int) -> str:
    return jwt.encode({"iss": config.team_id, "iat": now_s}, config.private_key, algorithm="ES256",
                      headers={"kid": config.key_id})  # fmt: skip


def apns_verdict(status: int, body: bytes) -> Verdict:
    if status == 200:
        return Verdict.DELIVERED
    reason = str(_json(body).get("reason", ""))
    if status == 410 or reason in ("BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"):
        return Verdict.DEAD_TOKEN
    if status == 403 and reason == "ExpiredProviderToken":
        return Verdict.AUTH
    if status in (429, 500, 503):
        return Verdict.RETRY
    return Verdict.REFUSED


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
