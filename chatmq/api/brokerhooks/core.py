"""What every broker dialect asks, answered once: logins, identities, access decisions, secrets.

The dialects (chatmq/api/brokerhooks/emqx.py, rabbitmq.py) parse their broker's requests and word the
answers; they decide nothing themselves.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

import redis
from flask import abort, current_app

from chatmq.api.context import get_context
from chatmq.core.access import Action, Identity, authorize, logged_in_identity
from chatmq.core.logins import log_in
from chatmq.core.membership import MembershipView

log = logging.getLogger("chatmq.api")

_VIEW = "chatmq_brokerhooks_membership"


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


def membership() -> MembershipView:
    """The app's membership view (one for every dialect), caught up when it is due."""
    app: Any = current_app
    fresh = app.extensions.get(_VIEW)
    if fresh is None:
        ctx = get_context()
        fresh = app.extensions.setdefault(
            _VIEW, _FreshView(MembershipView(ctx.store), ctx.settings.membership_refresh_s)
        )
    return fresh.get()


def require_secret(configured: str | None, given: str | None) -> None:
    """No configured secret: the hooks do not exist (404). A wrong or missing one: 401."""
    if not configured:
        abort(404)
    if not hmac.compare_digest((given or "").encode(), configured.encode()):
        abort(401)


def log_in_device(username: str, password: str, address: str | None, *, broker: str) -> Identity | None:
    """The one login path (password, API token, identity-provider token; revocation, disabled users
    and the failed-login throttle included). Redis unreachable: refused, as chatmq's broker does,
    since a token's revocation cannot be checked."""
    ctx = get_context()
    try:
        return log_in(ctx.authenticator, ctx.throttle, username, password, address).identity
    except redis.RedisError:
        log.warning("%s login: cannot check token revocation; denied", broker)
        return None


def allowed(user: str, action: Action, topic: str) -> bool:
    """``chatmq.core.access.authorize`` for a logged-in user, with the API's membership view."""
    return authorize(
        logged_in_identity(user), action, topic, membership(), open_outside=get_context().settings.allow_anonymous
    )
