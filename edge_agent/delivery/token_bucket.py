"""A token bucket: at most so many a minute, a burst of at most that many at once.

The escalation budget of a pipeline (``escalate.budget_per_min``) is one. ``take`` is a
clock read, a few float operations and a comparison: cheap enough for a pipeline's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MINUTE_S = 60.0


class TokenBucket:
    """``per_minute`` tokens a minute, at most ``per_minute`` at once (a full bucket first)."""

    __slots__ = ("_capacity", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / MINUTE_S
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Take one token if there is one."""
        now = self._clock()
        tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
