"""The admin channel's wire format: a request topic and one response topic per request.

An operator (the admin identity, ``chatmq.core.config.ADMIN_USER`` with an admin token) publishes a
request to ``$CONTROL/chatmq/v1/request``; the broker answers on
``$CONTROL/chatmq/v1/response/{request-id}``, to the requesting connection only. ``$`` topics are
reserved for the server (MQTT 4.7.2): no device can publish there, and no ``#`` filter sees them.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

CONTROL_PREFIX = "$CONTROL/chatmq/v1/"
REQUEST_TOPIC = CONTROL_PREFIX + "request"
RESPONSE_PREFIX = CONTROL_PREFIX + "response/"
RESPONSE_FILTER = RESPONSE_PREFIX + "+"
# The bridge's fence (chatmq.core.membershipsync): {"version": V}, on the bridge's own connection.
MEMBERSHIP_TOPIC = CONTROL_PREFIX + "membership"
MAX_REQUEST_ID_CHARS = 64


class Command(enum.StrEnum):
    CLIENTS = "clients"  # args: {"user": optional user id}
    KICK = "kick"  # args: {"user": id} or {"client_id": id}
    STATS = "stats"  # no args
    REVALIDATE = "revalidate"  # args: {"user": id}: re-check live logins after a revoke or disable


class ControlError(Exception):
    """A request the broker refuses; ``code`` is machine-readable (bad_request, unknown_client...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def response_topic(request_id: str) -> str:
    return RESPONSE_PREFIX + request_id


def is_request_id(value: str) -> bool:
    """A request id the admin may choose: 1 to 64 characters, none of them '/', '+' or '#' (it is
    the last level of its response topic)."""
    return 0 < len(value) <= MAX_REQUEST_ID_CHARS and not any(c in value for c in "/+#")


def encode_request(request_id: str, command: Command, args: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"id": request_id, "command": command.value, "args": args or {}})


def parse_request(payload: bytes) -> tuple[str, Command, dict[str, Any]]:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ControlError("bad_request", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError("bad_request", "a request is a JSON object")
    request_id, command, args = data.get("id"), data.get("command"), data.get("args", {})
    if not isinstance(request_id, str) or not is_request_id(request_id):
        raise ControlError("bad_request", "id must be a short string without '/', '+' or '#'")
    if not isinstance(args, dict):
        raise ControlError("bad_request", "args must be an object")
    try:
        return request_id, Command(command), args
    except ValueError:
        raise ControlError("unknown_command", f"unknown command {command!r}") from None


def ok_response(request_id: str, result: Any) -> bytes:
    return orjson.dumps({"id": request_id, "ok": True, "result": result})


def error_response(request_id: str, code: str, message: str) -> bytes:
    return orjson.dumps({"id": request_id, "ok": False, "error": {"code": code, "message": message}})
