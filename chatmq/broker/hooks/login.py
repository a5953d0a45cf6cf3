"""Logins: who may connect.

Devices log in with their user id and a password or API token; the bridge logs in as the service
identity with a service token. (The will a client leaves is checked next, by the broker asking
``acl_check(WILL)``: a device may only leave ``presence/{self}/{device}``, its offline notice.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from amqtt.session import Session

from chatmq.broker.services import ANONYMOUS_KEY, IDENTITY_KEY, BrokerServices
from chatmq.core.access import Identity
from chatmq.core.auth import looks_like_token
from chatmq.core.logins import log_in

log = logging.getLogger(__name__)

RATE_LIMITED = object()  # too many failed logins for this user or address: refused without a check
# argon2 verifies on its own small pool: it costs ~0.1 s of CPU per password (argon2-cffi releases
# the GIL), so more threads than cores buy nothing, and on the shared default executor a burst of
# password logins would queue every token login and store call behind minutes of hashing.
PASSWORD_WORKERS = max(1, min(4, os.cpu_count() or 1))
# Token logins and the connection-rate check wait on Redis and the store, not the CPU: their own
# wider pool, so a reconnect storm is not capped by the default executor's min(32, cores + 4)
# threads (6 here) that the rest of the broker shares.
LOGIN_WORKERS = 16


class Logins:
    def __init__(self, services: BrokerServices) -> None:
        self.services = services
        self._password_pool = ThreadPoolExecutor(PASSWORD_WORKERS, thread_name_prefix="chatmq-argon2")
        self._login_pool = ThreadPoolExecutor(LOGIN_WORKERS, thread_name_prefix="chatmq-login")

    def close(self) -> None:
        self._password_pool.shutdown(wait=False, cancel_futures=True)
        self._login_pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, username: str | None, password: str | None, address: str | None) -> Identity | object | None:
        """Blocking: the failed-login throttle, then the credentials; a failure is counted."""
        login = log_in(self.services.authenticator, self.services.throttle, username, password, address)
        return RATE_LIMITED if login.rate_limited else login.identity

    async def authenticate(self, session: Session) -> bool:
        # A persistent session is reused across connections: never let a previous login's
        # identity survive a failed one.
        session.attributes.pop(IDENTITY_KEY, None)
        session.attributes.pop(ANONYMOUS_KEY, None)
        where = f"client_id={session.client_id!r} user={session.username!r} from {session.remote_address}"
        connections = self.services.connections
        loop = asyncio.get_running_loop()
        if (
            connections is not None
            and connections.enabled
            and not await loop.run_in_executor(self._login_pool, connections.allow, session.remote_address)
        ):
            log.warning("refused connection (too many from this address; rate limited): %s", where)
            return False
        if self.services.allow_anonymous and not session.username and not session.password:
            session.attributes[ANONYMOUS_KEY] = True
            return True
        # Blocking (store, Redis, argon2): off the event loop. Tokens are microseconds of HMAC plus
        # a Redis read, so they never wait behind passwords on the argon2 pool.
        pool = self._login_pool if looks_like_token(session.password or "") else self._password_pool
        try:
            identity = await loop.run_in_executor(
                pool, self._check, session.username, session.password, session.remote_address
            )
        except Exception:
            log.exception("refused login (authentication error): %s", where)
            return False
        if identity is RATE_LIMITED:
            log.warning("refused login (too many failed logins; rate limited): %s", where)
            return False
        if not isinstance(identity, Identity):
            reason = "no credentials" if not session.username or not session.password else "bad credentials"
            log.warning("refused login (%s): %s", reason, where)
            return False
        session.attributes[IDENTITY_KEY] = identity
        return True
