"""EMQX 5 HTTP authentication and authorization hooks: EMQX asks, chatmq's own rules answer.

EMQX posts ``{"username", "password", "clientid", ...}`` to ``/v1/emqx/authn`` on every CONNECT
and ``{"username", "clientid", "topic", "action", ...}`` to ``/v1/emqx/authz`` on every publish and
subscribe; both answer ``{"result": "allow" | "deny" | "ignore"}`` as EMQX documents. They call
the same ``Authenticator`` and ``chatcore.access.authorize`` as the amqtt plugins, so EMQX
enforces exactly the same rules (docs/brokers.md has the EMQX configuration).

Only EMQX may call them: the request must carry the shared secret ``CHATMQ_EMQX_HOOK_SECRET`` in
the ``X-Chatmq-Hook-Secret`` header; without a configured secret the hooks do not exist (404).
Malformed requests are denied, never ignored, so a misconfigured template fails closed.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

import redis
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from api.context import get_context
from chatcore.access import Action, Identity, authorize
from chatcore.config import ADMIN_USER, SERVICE_USER
from chatcore.logins import log_in
from chatcore.membership import MembershipView

log = logging.getLogger("chatmq.api")

SECRET_HEADER = "X-Chatmq-Hook-Secret"
_VIEW = "chatmq_emqx_membership"
_ACTIONS = {"publish": Action.PUBLISH, "subscribe": Action.SUBSCRIBE}

bp = Blueprint("emqx", __name__, url_prefix="/v1/emqx")


class _FreshView:
    """A MembershipView refreshed at most every ``membership_refresh_s`` as requests come in."""

    def __init__(self, view: MembershipView, every_s: float) -> None:
        self.view = view
        self._every_s = every_s
        self._next = 0.0
        self._lock = threading.Lock()

    def get(self) -> MembershipView:
        now = time.monotonic()
        if now >= self._next:
            with self._lock:
                if now >= self._next:
                    self.view.refresh()
                    self._next = now + self._every_s
        return self.view


def _membership() -> MembershipView:
    app: Any = current_app
    fresh = app.extensions.get(_VIEW)
    if fresh is None:
        ctx = get_context()
        fresh = app.extensions.setdefault(_VIEW, _FreshView(MembershipView(ctx.store),
                                                            ctx.settings.membership_refresh_s))
    return fresh.get()


@bp.before_request
def _only_emqx() -> None:
    secret = get_context().settings.emqx_hook_secret
    if not secret:
        abort(404)
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        abort(401)


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
    ctx = get_context()
    # The device's address, when the hook's body template sends it (docs/brokers.md): the
    # per-address failed-login limit then applies as on chatmq's own broker.
    body = request.get_json(silent=True)
    peer = body.get("peerhost") if isinstance(body, dict) else None
    try:
        login = log_in(ctx.authenticator, ctx.throttle, fields["username"], fields["password"],
                       peer if isinstance(peer, str) and peer else None)  # fmt: skip
    except redis.RedisError:
        log.warning("emqx authn: cannot check token revocation; denied")  # fail closed, as the broker does
        return _result("deny")
    identity = login.identity
    if identity is None:
        return _result("deny")
    return _result("allow", is_superuser=identity.is_service)


@bp.post("/authz")
def authz() -> Response:
    """PUBLISH or SUBSCRIBE by a client EMQX has already authenticated through ``authn``."""
    fields = _fields("username", "topic", "action")
    if fields is None or fields["action"] not in _ACTIONS:
        return _result("deny")
    user = fields["username"]
    # '@' is outside the user-id alphabet: only authn's token check lets anyone log in as these.
    identity = Identity(user=user, is_service=user == SERVICE_USER, is_admin=user == ADMIN_USER)
    allowed = authorize(identity, _ACTIONS[fields["action"]], fields["topic"], _membership(),
                        open_outside=get_context().settings.allow_anonymous)
    return _result("allow" if allowed else "deny")


def install(app: Flask) -> None:
    app.register_blueprint(bp)
