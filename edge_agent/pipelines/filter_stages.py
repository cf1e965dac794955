"""The filter stages: one class per config ``type``, and ``STAGES``, the table of them.

*State stages* (``threshold``, ``hysteresis``, ``debounce``) keep no state of their own: they
only configure the engine's lifecycle (``edge_agent.pipelines.filters``). *Report stages*
(``deadband``, ``report_interval``, ``rate_limit``, ``dedup``) see each decision the engine
makes, in the order the chain lists them, and let it pass or drop it; what they remember per
key they forget when the engine forgets the key. Pure logic: time comes from the decisions'
timestamps only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edge_agent.pipelines.filter_config import (
    DeadbandFilterConfig,
    DebounceFilterConfig,
    DedupFilterConfig,
    HysteresisFilterConfig,
    RateLimitFilterConfig,
    ReportIntervalFilterConfig,
    ThresholdFilterConfig,
)

if TYPE_CHECKING:
    # Annotations only: the engine imports the stages at run time, never the reverse.
    from edge_agent.pipelines.filters import Decision, KeyState


class Threshold:
    """On at or above ``threshold``: a hysteresis whose two levels are equal."""

    def __init__(self, config: ThresholdFilterConfig) -> None:
        self.on_level = self.off_level = config.threshold


class Hysteresis:
    """On at or above ``on``; once on, off only below ``off`` (``off < on``): no chatter
    when the signal hovers around one level."""

    def __init__(self, config: HysteresisFilterConfig) -> None:
        self.on_level = config.on
        self.off_level = config.off


class Debounce:
    """The state changes only when ``n`` of the last ``m`` raw states agree (``m/2 < n <= m``,
    so "n on" and "n off" never hold at once and the state cannot flap); n = m = 1 is the
    identity."""

    def __init__(self, config: DebounceFilterConfig) -> None:
        if not (0 < config.n <= config.m and 2 * config.n > config.m):
            raise ValueError(f"need m/2 < n <= m, got n={config.n}, m={config.m}")
        self.n = config.n
        self.m = config.m


class ReportStage(Protocol):
    """A stage after the lifecycle. ``decision`` is what earlier stages passed (or None);
    ``candidate`` is what this sample would report (its transition, update or instant).

    A stage returns the decision it lets through; an ``end`` must come back unchanged.
    """

    type: ClassVar[str]
    wants_updates: ClassVar[bool]

    def step(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        """Pass, drop or (``report_interval``) emit a decision for this sample."""
        ...

    def forget(self, key: str) -> None:
        """Drop what the stage keeps for ``key`` (its lifecycle is over)."""
        ...


_VALUE_REPORTS = ("update", "instant")


class Deadband:
    """A value report passes only if its value moved at least ``delta`` from the key's last
    reported value; a ``start`` sets that reference, starts and ends always pass."""

    type: ClassVar[str] = "deadband"
    wants_updates: ClassVar[bool] = True

    def __init__(self, config: DeadbandFilterConfig) -> None:
        self.delta = config.delta
        self._last: dict[str, float] = {}

    def step(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        if decision is None:
            return None
        key = decision.key
        if decision.state in _VALUE_REPORTS:
            last = self._last.get(key)
            if last is not None and abs(decision.value - last) < self.delta:
                return None
        self._last[key] = decision.value
        return decision

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


class ReportInterval:
    """ "Only on change, but at least every max_s": a value report closer than ``min_s`` to
    the key's previous report is dropped; while the key is on (always, for a value chain),
    an ``update`` with the current peak and value is emitted when ``max_s`` has passed since
    the previous report, even if earlier stages dropped this sample's. Starts and ends are
    state changes and always pass."""

    type: ClassVar[str] = "report_interval"
    wants_updates: ClassVar[bool] = True

    def __init__(self, config: ReportIntervalFilterConfig) -> None:
        self.min_s = config.min_s
        self.max_s = config.max_s
        self._last: dict[str, float] = {}

    def step(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        key = candidate.key
        last = self._last.get(key)
        if decision is None:
            due = (
                self.max_s is not None
                and last is not None
                and key_state.on
                and candidate.state in _VALUE_REPORTS
                and candidate.ts - last >= self.max_s
            )
            if not due:
                return None
            decision = candidate
        elif (
            decision.state in _VALUE_REPORTS
            and last is not None
            and decision.ts - last < self.min_s
        ):
            return None
        self._last[key] = decision.ts
        return decision

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


class RateLimit:
    """A token bucket over the whole pipeline (all keys): ``burst`` tokens, refilled at
    ``per_s``; every emitted start, update and instant takes one, so they never exceed
    ``burst + per_s * t`` in any span t. Ends take none and always pass (a started event
    always ends); a dropped start mutes its event, so no end follows it either."""

    type: ClassVar[str] = "rate_limit"
    wants_updates: ClassVar[bool] = False

    def __init__(self, config: RateLimitFilterConfig) -> None:
        self.per_s = config.per_s
        self.burst = float(config.burst)
        self._tokens = self.burst
        self._last_ts: float | None = None

    def step(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        if decision is None or decision.state == "end":
            return decision
        ts = decision.ts
        if self._last_ts is not None and ts > self._last_ts:
            self._tokens = min(self.burst, self._tokens + (ts - self._last_ts) * self.per_s)
        if self._last_ts is None or ts > self._last_ts:
            self._last_ts = ts
        if self._tokens < 1.0:
            return None
        self._tokens -= 1.0
        return decision

    def forget(self, key: str) -> None:
        pass


class Dedup:
    """Drop an event equal in (key, state, label) to one this stage let through less than
    ``window_s`` earlier (by the samples' time). Ends always pass (and are remembered).
    Applying it twice is the same as once."""

    type: ClassVar[str] = "dedup"
    wants_updates: ClassVar[bool] = False
    _PRUNE_AT = 1024

    def __init__(self, config: DedupFilterConfig) -> None:
        self.window_s = config.window_s
        self._seen: dict[tuple[str, str, str], float] = {}

    def step(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        if decision is None:
            return None
        identity = (decision.key, decision.state, decision.label)
        seen = self._seen.get(identity)
        if seen is not None and decision.ts - seen < self.window_s and decision.state != "end":
            return None
        self._seen[identity] = decision.ts
        if len(self._seen) > self._PRUNE_AT:
            # Track ids come and go: keep the memory bounded by what the window can still match.
            horizon = decision.ts - self.window_s
            self._seen = {k: t for k, t in self._seen.items() if t > horizon}
        return decision

    def forget(self, key: str) -> None:
        pass  # dedup outlives a track: a key that comes back within the window is a duplicate


Stage = Threshold | Hysteresis | Debounce | Deadband | ReportInterval | RateLimit | Dedup

STAGES: dict[str, Callable[[Any], Stage]] = {
    "threshold": Threshold,
    "hysteresis": Hysteresis,
    "debounce": Debounce,
    "deadband": Deadband,
    "report_interval": ReportInterval,
    "rate_limit": RateLimit,
    "dedup": Dedup,
}
"""Every filter stage by its config ``type``."""
