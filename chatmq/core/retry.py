"""Retry with back-off as one object (redis-py's ``Retry`` + ``Backoff`` habit), not loops in callers.

A ``RetryPolicy`` answers two questions about a failed attempt: how long to wait before the next
one, and whether to give up. It keeps no state of its own (the attempt count lives with the work,
for deliveries in the store), so one policy serves every delivery and survives restarts. Delays
grow exponentially from ``base_s`` up to ``cap_s`` with "equal jitter" (half fixed, half random),
so a receiver that was down is not hit by every retry at the same instant when it comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 600.0
    max_attempts: int = 12  # attempts in all, the first included; then the work is dead-lettered
    jitter: bool = True
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.max_attempts < 1:
            raise ValueError(f"bad retry policy: {self}")

    def delay_s(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (1 after the first failure)."""
        exact = min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1))
        if not self.jitter:
            return exact
        return exact / 2 + self._random.uniform(0, exact / 2)

    def exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` attempts failed and no further one is allowed."""
        return attempts >= self.max_attempts

    def schedule(self, attempts: int, now_ms: int) -> int | None:
        """When to try again after ``attempts`` failures (ms since epoch), or None to give up."""
        if self.exhausted(attempts):
            return None
        return now_ms + int(self.delay_s(attempts) * 1000)

    def longest_s(self) -> float:
        """The most time every retry together can take (without jitter): what the docs promise."""
        return sum(min(self.cap_s, self.base_s * 2 ** (n - 1)) for n in range(1, self.max_attempts))
