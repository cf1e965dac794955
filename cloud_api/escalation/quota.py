"""Each agent's escalation quota: a token bucket (``shared.token_bucket``) per agent, and
one spend per escalation id.

The buckets live in the runner's memory: with N runners on a shared subscription an agent
may get up to N times its quota (the broker spreads its escalations over them), and a
restart refills every bucket. The agent's own budget (its token bucket) is the first limit;
this one stops an agent that ignores it.

An escalation spends one token once: a batch run again (the database dropped before its
answers were stored) gets the decision its ids got the first time, so a retry never refuses
as "over quota" what was let through before. Stored answers cover resends after that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared.token_bucket import TokenBucket

MAX_AGENTS = 100_000
"""Buckets kept; past this the least recently used are forgotten, which refills them."""
MAX_DECISIONS = 16_384
"""Escalation ids whose decision is remembered: far more than a batch being retried holds."""


class Quota:
    """``per_min`` escalations a minute per agent, with bursts of up to ``burst``."""

    def __init__(
        self, *, per_min: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        TokenBucket(per_min, clock, burst=burst)  # ValueError now for a quota allowing nothing
        self._per_min, self._burst, self._clock = per_min, burst, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._decided: OrderedDict[tuple[str, str], bool] = OrderedDict()

    def take(self, agent_id: str, escalation_id: str) -> bool:
        """Whether ``escalation_id`` of ``agent_id`` is within the quota: the first time it
        is asked, one of the agent's tokens is spent (nothing when there is none left); the
        same id asked again gets the same answer and spends nothing."""
        key = (agent_id, escalation_id)
        decided = self._decided.get(key)
        if decided is not None:
            self._decided.move_to_end(key)
            return decided
        bucket = self._buckets.pop(agent_id, None)
        if bucket is None:
            bucket = TokenBucket(self._per_min, self._clock, burst=self._burst)
            if len(self._buckets) >= MAX_AGENTS:
                self._buckets.popitem(last=False)
        self._buckets[agent_id] = bucket  # re-inserted: least recently used first
        allowed = bucket.take()
        self._decided[key] = allowed
        if len(self._decided) > MAX_DECISIONS:
            self._decided.popitem(last=False)
        return allowed
