"""``POST /v1/conversations/{conv}/messages``: send a message over HTTP, for bots, backends and
tests, with exactly the semantics of an MQTT send (chatmq/core/httpsend.py says how): the same
payload and validation (``chatmq.core.protocol.parse_send``), the same ``client_msg_id``
idempotency, the seq assigned by the bridge in order with MQTT sends, and an answer only once the
message is durable: the ack ``user/{user}/ack`` would carry."""

from __future__ import annotations

import time

import orjson
import redis
from flask import Response, jsonify, request
from pydantic import BaseModel, Field

from chatmq.api import conversations
from chatmq.api.bearer import current_user
from chatmq.api.context import ApiContext, get_context
from chatmq.api.conversations import ConvPath, member_conversation
from chatmq.api.errors import ApiError, error_responses
from chatmq.core.httpsend import QUEUE_TTL_S, RETRY_STATUS, SINGLE_BRIDGE, SendRequest, queue_key, reply_key
from chatmq.core.leases import lease_holder
from chatmq.core.partitions import partition_of
from chatmq.core.protocol import ErrorCode, PayloadError, parse_send

WAIT_STEP_S = 1  # one BLPOP: below the API's Redis socket timeout

# The ack's error code -> the HTTP status it is answered with (the body keeps the ack's code).
STATUS_OF = {
    ErrorCode.BAD_PAYLOAD: 400,
    ErrorCode.BAD_ATTACHMENT: 400,
    ErrorCode.WRONG_CONVERSATION: 400,
    ErrorCode.BAD_TARGET: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.NOT_MEMBER: 403,
    ErrorCode.NOT_SENDER: 403,
    ErrorCode.UNKNOWN_CONVERSATION: 404,
    ErrorCode.UNKNOWN_TARGET: 404,
    ErrorCode.TARGET_DELETED: 409,
    ErrorCode.EDIT_WINDOW_CLOSED: 409,
    ErrorCode.ALREADY_REACTED: 409,
    ErrorCode.NOT_REACTED: 409,
    ErrorCode.TOO_MANY_REACTIONS: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
}


class AckOut(BaseModel):
    client_msg_id: str
    conv: str
    status: str = Field(description="received: stored and durable")
    seq: int = Field(description="the message's seq (the original one for a repeated client_msg_id)")
    ts: int = Field(description="ms since epoch, assigned by the server")


@conversations.bp.post("/<conv>/messages", responses={200: AckOut, **error_responses(403, 404, 409, 413, 429, 503)})
def send(path: ConvPath) -> Response:
    """Send a message, or a change to one: reply, edit, delete, react (body: any payload of
    chat/{conv}/send/{user}). Answers the received ack once the entry is durable; a resend with
    the same client_msg_id answers the same seq."""
    ctx = get_context()
    conversation = member_conversation(path.conv)
    raw = request.get_data()
    try:
        parse_send(raw, ctx.settings.max_body_bytes, conv=conversation.id)  # refuse now what the bridge would
    except PayloadError as exc:
        raise ApiError(STATUS_OF.get(exc.code, 400), exc.message, exc.code.value) from None
    ack = _hand_to_bridge(ctx, conversation.id, current_user(), raw)
    if ack.get("status") == "received":
        return jsonify(ack)
    error = ack.get("error") or {}
    code = ErrorCode(error.get("code", ErrorCode.INTERNAL.value))
    response = jsonify({"error": {"code": code.value, "message": error.get("message", "refused")}})
    response.status_code = STATUS_OF.get(code, 500)
    if code is ErrorCode.RATE_LIMITED:
        response.headers["Retry-After"] = "1"
    return response


def _hand_to_bridge(ctx: ApiContext, conv: str, user: str, raw: bytes) -> dict:
    """Queue the send for the bridge owning the conversation and wait for its ack."""
    timeout_s = ctx.settings.http_send_timeout_s
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            send_request = SendRequest.new(conv, user, raw, int(time.time() * 1000 + left * 1000))
            owner = lease_holder(ctx.redis, partition_of(conv, ctx.settings.bridge_partitions)) or SINGLE_BRIDGE
            with ctx.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(queue_key(owner), send_request.encode())
                pipe.expire(queue_key(owner), QUEUE_TTL_S)
                pipe.execute()
            ack = _wait(ctx.redis, send_request.id, deadline)
            if ack is not None and ack.get("status") != RETRY_STATUS:
                return ack
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)  # the partition is moving between bridges: ask its new owner
    except redis.RedisError as exc:
        raise ApiError(503, f"cannot reach the bridge's queue ({type(exc).__name__}); resend with the same "
                       "client_msg_id") from None  # fmt: skip
    raise ApiError(503, f"not confirmed within {timeout_s:g} s; resend with the same client_msg_id")


def _wait(client: redis.Redis, request_id: str, deadline: float) -> dict | None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        answer = client.blpop([reply_key(request_id)], timeout=max(0.01, min(WAIT_STEP_S, left)))
        if answer is not None:
            return orjson.loads(answer[1])
