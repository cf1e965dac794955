"""A token bucket: at most so many a minute, a burst of at most so many at once.

The edge's escalation budget of a pipeline (``escalate.budget_per_min``) is one; the cloud's
per-agent escalation quota (``cloud_api.escalation.quota``) keeps one per agent. ``take`` is
a clock read, a few float operations and a comparison: cheap enough for a pipeline's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MINUTE_S = 60.0


class TokenBucket:
    """``per_minute`` tokens a minute, at most ``burst`` at once (default: ``per_minute``);
    the bucket starts full."""

    __slots__ = ("_capacity", "_clock", "_last", "_rate", "_tokens")

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float | None = None,
    ) -> None:
        capacity = float(per_minute if burst is None else burst)
        if per_minute <= 0 or capacity < 1:
            raise ValueError(
                f"a token bucket needs per_min > 0 and burst >= 1, not {per_minute}, {capacity:g}"
            )
        self._capacity = capacity
        self._rate = per_minute / MINUTE_S
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Take one token if there is one (False, nothing taken, when there is none)."""
        now = self._clock()
        tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
