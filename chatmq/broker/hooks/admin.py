"""The admin channel: list clients, kick, stats, and re-checking live logins after a revoke.

Requests arrive on ``$CONTROL/chatmq/v1/request`` (chatmq.core.control), handed over by the broker's
control hook before its drop of client ``$`` publishes; only a session logged in with the admin
identity is answered (anyone else is logged and ignored: no response topic to probe). The response
goes to the requesting connection alone. It also listens on Redis for auth changes (a token
revoke, a user disabled) and closes the affected live connections at once. It sees the broker
only through ``BrokerView`` (chatmq/broker/hooks/__init__.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from amqtt.session import Session

from chatmq.broker import metrics
from chatmq.broker.connection import KEEPALIVE_GRACE
from chatmq.broker.services import CONNECTED_AT_KEY, BrokerServices, RedisListener, session_identity
from chatmq.core.control import Command, ControlError, error_response, ok_response, parse_request, response_topic
from chatmq.core.ids import is_valid_id
from chatmq.core.revocation import AUTH_CHANGED_CHANNEL

if TYPE_CHECKING:
    from chatmq.broker.hooks import BrokerView

log = logging.getLogger(__name__)

RATE_WINDOW_S = 10  # "per second" figures are averaged over this many seconds


class Admin:
    def __init__(self, services: BrokerServices, redis_url: str | None = None) -> None:
        self.services = services
        self.broker: BrokerView | None = None  # set by start()
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=RATE_WINDOW_S + 1)
        self._tasks: list[asyncio.Task[None]] = []
        self._revalidations: set[asyncio.Task[list[str]]] = set()
        self._redis_url = redis_url
        self._listener = RedisListener(redis_url or "", {AUTH_CHANGED_CHANNEL: self._auth_changed},
                                       "admin-auth-changes")  # fmt: skip

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self, broker: BrokerView) -> None:
        self.broker = broker
        self._tasks.append(asyncio.create_task(self._sample_loop(), name="admin-stats"))
        if self._redis_url:
            self._listener.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        self._listener.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # --- requests -----------------------------------------------------------------------------
    async def handle(self, session: Session, payload: bytes) -> None:
        identity = session_identity(session.attributes)
        if identity is None or not identity.is_admin:
            who = identity.user if identity else "anonymous"
            log.warning("refused admin request from client_id=%r user=%s: not the admin identity",
                        session.client_id, who)
            metrics.CONTROL_REQUESTS.labels(command="-", outcome="refused").inc()
            return
        try:
            request_id, command, args = parse_request(payload)
        except ControlError as exc:
            log.warning("unreadable admin request from client_id=%r: %s", session.client_id, exc.message)
            metrics.CONTROL_REQUESTS.labels(command="-", outcome="bad_request").inc()
            return
        try:
            result = await self._run(command, args, session)
        except ControlError as exc:
            reply = error_response(request_id, exc.code, exc.message)
            outcome = exc.code
        except Exception as exc:
            log.exception("admin request %s failed", command.value)
            reply = error_response(request_id, "internal", f"{type(exc).__name__}: {exc}")
            outcome = "internal"
        else:
            reply = ok_response(request_id, result)
            outcome = "ok"
        log.info("admin request id=%s command=%s args=%s outcome=%s", request_id, command.value, args, outcome)
        metrics.CONTROL_REQUESTS.labels(command=command.value, outcome=outcome).inc()
        self._view().reply(session, response_topic(request_id), reply)

    async def _run(self, command: Command, args: dict[str, Any], asker: Session) -> Any:
        if command is Command.CLIENTS:  # every connected client but the asking admin connection itself
            user = _optional_user(args)
            return [self._describe(s) for s in self._view().connected()
                    if s is not asker and (user is None or _user_of(s) == user)]
        if command is Command.KICK:
            return await self._kick(args)
        if command is Command.STATS:
            return self._stats()
        if command is Command.REVALIDATE:
            user = _optional_user(args)
            if user is None:
                raise ControlError("bad_request", "revalidate needs a user")
            return {"kicked": await self.revalidate(user)}
        raise ControlError("unknown_command", command.value)  # pragma: no cover - parse_request filters

    def _view(self) -> BrokerView:
        if self.broker is None:
            raise ControlError("internal", "the admin channel has not started")
        return self.broker

    @staticmethod
    def _describe(session: Session) -> dict[str, Any]:
        since = session.attributes.get(CONNECTED_AT_KEY)
        keepalive = session.keep_alive or 0
        return {
            "client_id": session.client_id,
            "user": _user_of(session),
            "address": f"{session.remote_address}:{session.remote_port}",
            "connected_since": since,
            "keepalive_s": keepalive / KEEPALIVE_GRACE,
            "subscriptions": len(session.attributes.get("chatmq.subscriptions", {})),
            "queued": session.retained_messages.qsize(),
            "clean_session": bool(session.clean_session),
        }

    async def _kick(self, args: dict[str, Any]) -> dict[str, Any]:
        client_id, user = args.get("client_id"), _optional_user(args)
        if (client_id is None) == (user is None):
            raise ControlError("bad_request", "kick needs exactly one of user or client_id")
        if client_id is not None:
            found = self._view().session(client_id)
            if found is None or not found.transitions.is_connected():
                raise ControlError("unknown_client", f"no connected client {client_id!r}")
            victims = [found]
        else:
            victims = [s for s in self._view().connected() if _user_of(s) == user]
        return {"kicked": [await self._close(s, "admin") for s in victims]}

    async def _close(self, session: Session, reason: str) -> str:
        log.warning("closing client_id=%r user=%s (%s)", session.client_id, _user_of(session), reason)
        metrics.KICKED.labels(reason=reason).inc()
        await self._view().disconnect(session)
        return str(session.client_id)

    async def revalidate(self, user: str) -> list[str]:
        """Log every live connection of ``user`` in again with its own credentials; close the ones
        that no longer pass (revoked token, disabled user, changed password)."""
        kicked = []
        for session in self._view().connected():
            identity = session_identity(session.attributes)
            if identity is None or identity.user != user or identity.is_service or identity.is_admin:
                continue
            still = await asyncio.to_thread(
                self.services.authenticator.authenticate, session.username, session.password
            )
            if still is None:
                kicked.append(await self._close(session, "revoked"))
        return kicked

    def _stats(self) -> dict[str, Any]:
        broker = self._view()
        totals = broker.totals
        sessions = broker.kept_sessions()
        connected = len(broker.connected())
        in_rate = out_rate = 0.0
        if len(self._samples) >= 2:
            (t0, r0, d0), (t1, r1, d1) = self._samples[0], self._samples[-1]
            if t1 > t0:
                in_rate, out_rate = (r1 - r0) / (t1 - t0), (d1 - d0) / (t1 - t0)
        return {
            "connections": connected,
            "sessions": len(sessions),
            "queued": sum(s.retained_messages.qsize() for s in sessions),
            "subscriptions": broker.filter_count(),
            "received_total": totals.received,
            "delivered_total": totals.delivered,
            "rejected_total": totals.rejected,
            "connections_total": totals.connections,
            "in_per_s": round(in_rate, 2),
            "out_per_s": round(out_rate, 2),
            "uptime_s": round(time.time() - broker.started_at, 1),
        }

    async def _sample_loop(self) -> None:
        while True:
            totals = self._view().totals
            self._samples.append((time.monotonic(), totals.received, totals.delivered))
            await asyncio.sleep(1.0)

    # --- auth changes from Redis (chatmq.core.revocation) ---------------------------------------
    def _auth_changed(self, user: str) -> None:
        if is_valid_id(user):
            task = asyncio.ensure_future(self.revalidate(user))
            self._revalidations.add(task)
            task.add_done_callback(self._revalidations.discard)


def _user_of(session: Session) -> str | None:
    identity = session_identity(session.attributes)
    return identity.user if identity else None


def _optional_user(args: dict[str, Any]) -> str | None:
    user = args.get("user")
    if user is None:
        return None
    if not isinstance(user, str) or not (is_valid_id(user) or user.startswith("@")):
        raise ControlError("bad_request", f"{user!r} is not a user id")
    return user
