"""A short-lived memory of passwords that matched, so a reconnect does not pay argon2 again.

argon2 costs ~0.1 s of CPU per check by design. When thousands of devices that log in with a
password reconnect at once (a network blip, a load balancer failover, the broker re-checking live
connections after an auth change), that is minutes of CPU. This cache remembers, per user, that a
password matched the user's *current* stored hash, for ``ttl_s`` seconds.

What keeps it safe:
- only a successful verification is remembered: a wrong password always costs a full argon2
  check (and counts as a failed login), so the cache cannot speed up guessing;
- an entry is an HMAC of (user, stored hash, password) under a random per-process key: no password
  is kept, and nothing usable outside this process;
- the stored hash is part of the entry, and the caller reads the user row (hash and disabled flag)
  on every login: a password change misses the cache at once, a disabled user is refused before
  the cache is asked. Token logins are never cached: their signature check is microseconds and their
  revocation marks must be read every time;
- entries are compared with ``hmac.compare_digest``, expire after ``ttl_s``, and there are at most
  ``max_users`` of them (least recently used first out).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_TTL_S = 300.0
DEFAULT_MAX_USERS = 100_000


class VerifiedPasswords:
    """Thread-safe: the broker verifies passwords on a thread pool."""

    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, max_users: int = DEFAULT_MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if ttl_s <= 0 or max_users <= 0:
            raise ValueError("ttl_s and max_users must be positive")
        self.ttl_s = ttl_s
        self.max_users = max_users
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # user -> (digest, expires)
        self._lock = threading.Lock()

    def _digest(self, user: str, password_hash: str, password: str) -> bytes:
        message = b"\0".join(part.encode() for part in (user, password_hash, password))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def matches(self, user: str, password_hash: str, password: str) -> bool:
        """True if this password was verified against this very hash within the last ``ttl_s``."""
        digest = self._digest(user, password_hash, password)
        with self._lock:
            entry = self._entries.get(user)
            if entry is None:
                return False
            if entry[1] <= self._clock():
                del self._entries[user]
                return False
            self._entries.move_to_end(user)
        return hmac.compare_digest(entry[0], digest)

    def remember(self, user: str, password_hash: str, password: str) -> None:
        """Call only after a successful full verification."""
        digest = self._digest(user, password_hash, password)
        with self._lock:
            self._entries[user] = (digest, self._clock() + self.ttl_s)
            self._entries.move_to_end(user)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        with self._lock:
            self._entries.pop(user, None)

    def __len__(self) -> int:
        return len(self._entries)
