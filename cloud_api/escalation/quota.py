"""Each agent's escalation quota: a token bucket, refilled continuously, per agent.

The buckets live in the runner's memory: with N runners on a shared subscription an agent
may get up to N times its quota (the broker spreads its escalations over them), and a
restart refills every bucket. The agent's own budget (its token bucket) is the first limit;
this one stops an agent that ignores it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_AGENTS = 100_000
"""Buckets kept; past this the fullest (idle longest) are forgotten, which refills them."""


class Quota:
    """``per_min`` escalations a minute per agent, with bursts of up to ``burst``."""

    def __init__(
        self, *, per_min: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_min <= 0 or burst < 1:
            raise ValueError(f"a quota needs per_min > 0 and burst >= 1, not {per_min}, {burst}")
        self._rate = per_min / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # agent -> (tokens, at)

    def take(self, agent_id: str) -> bool:
        """Spend one of ``agent_id``'s tokens; False (nothing spent) when it has none left."""
        now = self._clock()
        tokens, at = self._buckets.pop(agent_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= MAX_AGENTS:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[agent_id] = (tokens, now)  # re-inserted: least recently used first
        return allowed
