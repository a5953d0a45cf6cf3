"""The admin channel's wire format: a request topic and one response topic per request.

An operator (the admin identity, ``chatcore.config.ADMIN_USER`` with an admin token) publishes a
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
# The bridge's fence (chatcore.membershipsync): {"version": V}, on the bridge's own connection.
MEMBERSHIP_TOPIC = CONTROL_PREFIX + "membership"


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


def is_control_response(topic: str) -> bool:
    """The response topics (or their one-level filter): all an admin may subscribe to."""
    if not topic.startswith(RESPONSE_PREFIX):
        return False
    rest = topic[len(RESPONSE_PREFIX):]
    return bool(rest) and "/" not in rest and "#" not in rest and (rest == "+" or "+" not in rest)


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
    if not isinstance(request_id, str) or not request_id or "/" in request_id or "+" in request_id \
            or "#" in request_id or len(request_id) > 64:
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
