"""EMQX 5 HTTP authentication and authorization hooks: EMQX asks, chatmq's own rules answer.

EMQX posts ``{"username", "password", "clientid", ...}`` to ``/v1/emqx/authn`` on every CONNECT
and ``{"username", "clientid", "topic", "action", ...}`` to ``/v1/emqx/authz`` on every publish and
subscribe; both answer ``{"result": "allow" | "deny" | "ignore"}`` as EMQX documents. The decisions
are chatmq/api/brokerhooks/core.py's (the login path and the rule table every broker uses), so EMQX
enforces exactly the same rules (docs/brokers.md has the EMQX configuration).

Only EMQX may call them: the request must carry the shared secret ``CHATMQ_EMQX_HOOK_SECRET`` in
the ``X-Chatmq-Hook-Secret`` header; without a configured secret the hooks do not exist (404).
Malformed requests are denied, never ignored, so a misconfigured template fails closed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from chatmq.api.brokerhooks import core
from chatmq.api.context import get_context
from chatmq.core.access import Action

SECRET_HEADER = "X-Chatmq-Hook-Secret"
_ACTIONS = {"publish": Action.PUBLISH, "subscribe": Action.SUBSCRIBE}

bp = Blueprint("emqx", __name__, url_prefix="/v1/emqx")


@bp.before_request
def _only_emqx() -> None:
    core.require_secret(get_context().settings.emqx_hook_secret, request.headers.get(SECRET_HEADER))


def _fields(*names: str) -> dict[str, str] | None:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None
    values = {name: body.get(name) for name in names}
    if not all(isinstance(v, str) and v for v in values.values()):
        return None
    return values  # type: ignore[return-value]


def _result(result: str, **extra: Any) -> Response:
    return jsonify({"result": result, **extra})


@bp.post("/authn")
def authn() -> Response:
    """CONNECT: the username with its password or token. The bridge is EMQX's superuser."""
    fields = _fields("username", "password")
    if fields is None:
        return _result("deny")
    # The device's address, when the hook's body template sends it (docs/brokers.md): the
    # per-address failed-login limit then applies as on chatmq's own broker.
    body = request.get_json(silent=True)
    peer = body.get("peerhost") if isinstance(body, dict) else None
    identity = core.log_in_device(fields["username"], fields["password"],
                                  peer if isinstance(peer, str) and peer else None, broker="emqx")  # fmt: skip
    if identity is None:
        return _result("deny")
    return _result("allow", is_superuser=identity.is_service)


@bp.post("/authz")
def authz() -> Response:
    """PUBLISH or SUBSCRIBE by a client EMQX has already authenticated through ``authn``."""
    fields = _fields("username", "topic", "action")
    if fields is None or fields["action"] not in _ACTIONS:
        return _result("deny")
    return _result("allow" if core.allowed(fields["username"], _ACTIONS[fields["action"]], fields["topic"]) else "deny")
