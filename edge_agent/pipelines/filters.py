"""The filter engine: one for sensors and vision. Pure logic, no I/O, no clock reads.

A pipeline declares an ordered chain of stages (config ``filters:``); ``build_engine`` turns
it into a ``FilterEngine`` through ``STAGES``, a table keyed by the stage's ``type``. Time
comes only from the samples' timestamps, so a chain is deterministic and testable.

The chain has two parts, in this order:

* **State stages** decide, per key, whether the signal is on. A *level* stage
  (``threshold`` or ``hysteresis``) gives the raw state of each sample; an optional
  ``debounce`` (n of m) smooths it. Their transitions are the event *lifecycle*: ``start``
  when the state turns on, ``end`` when it turns off, so one incident is one event with
  its peak score and label. A chain without a level stage is a *value* chain: every
  sample is an ``instant`` report (telemetry), thinned by the report stages.
* **Report stages** (``deadband``, ``report_interval``, ``rate_limit``, ``dedup``) see the
  decisions in the order listed and may drop them; ``report_interval`` may also emit an
  ``update`` (the heartbeat of an open event). While an event is on, each sample is an
  ``update`` candidate, but only when a ``deadband`` or ``report_interval`` stage is there
  to thin them: without one a lifecycle chain emits only ``start`` and ``end``.

Two rules keep every key's lifecycle whole, whatever the report stages drop:

* an ``end`` whose ``start`` was emitted always passes (a started event always ends);
* when a stage drops a ``start``, that event is *muted*: its updates and its ``end`` are
  not emitted either (the cloud never sees an end without a start). Both are counted.

A *key* names one lifecycle: a signal for sensors (``""`` for a pipeline's only one), a
track id for vision. Sensors call ``step`` per sample; a vision pipeline whose tracker
already decides start/update/end calls ``offer`` per tracker decision and ``tick`` once per
frame (see ``FilterEngine``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from edge_agent.config import (
    DeadbandFilterConfig,
    DebounceFilterConfig,
    DedupFilterConfig,
    FilterStageConfig,
    HysteresisFilterConfig,
    RateLimitFilterConfig,
    ReportIntervalFilterConfig,
    ThresholdFilterConfig,
)

State = Literal["start", "update", "end", "instant"]


@dataclass(frozen=True, slots=True)
class Decision:
    """An event decided by the engine for ``key`` at sample ``seq`` (time ``ts``).

    ``score`` is the event's peak so far: the highest score of the samples that triggered a
    ``start``, the peak over the whole event for an ``update`` or ``end``, the sample's own
    for an ``instant``. ``value`` is the score of the sample that produced the decision.
    ``start_seq``/``start_ts`` are where the event started, so ``ts - start_ts`` is its age.
    """

    state: State
    key: str
    label: str
    score: float
    value: float
    seq: int
    ts: float
    start_seq: int
    start_ts: float


@dataclass(slots=True)
class Track:
    """The lifecycle state of one key (read by report stages, written by the engine)."""

    key: str
    raw: bool = False
    on: bool = False
    emitted: bool = False
    history: deque[tuple[bool, float, str]] = field(default_factory=deque)
    count_on: int = 0
    label: str = ""
    peak: float = 0.0
    value: float = 0.0
    start_seq: int = 0
    start_ts: float = 0.0

    def candidate(self, state: State, value: float, seq: int, ts: float) -> Decision:
        """The decision this key would report now (an update or heartbeat of its event)."""
        return Decision(
            state, self.key, self.label, self.peak, value, seq, ts, self.start_seq, self.start_ts
        )


@dataclass(slots=True)
class FilterCounters:
    """What the report stages held back (per stage type), and muted updates and ends."""

    dropped: Counter[str] = field(default_factory=Counter)
    """Decisions each report stage dropped (an update or instant, or a start: see muted)."""
    muted: int = 0
    """Events whose start a stage dropped, so their updates and end were held back too."""
    invalid: int = 0
    """Offered decisions that did not fit the key's lifecycle (an end without a start)."""

    @property
    def held_back(self) -> int:
        """Decisions the report stages dropped, all stages together."""
        return sum(self.dropped.values())


# -- state stages: they only configure the engine's lifecycle ------------------------------


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


# -- report stages ----------------------------------------------------------------------


class ReportStage(Protocol):
    """A stage after the lifecycle. ``decision`` is what earlier stages passed (or None);
    ``candidate`` is what this sample would report (its transition, update or instant).

    A stage returns the decision it lets through; an ``end`` must come back unchanged.
    """

    type: ClassVar[str]
    wants_updates: ClassVar[bool]

    def step(self, track: Track, candidate: Decision, decision: Decision | None) -> Decision | None:
        """Pass, drop or (``report_interval``) emit a decision for this sample."""
        ...

    def forget(self, key: str) -> None:
        """Drop what the stage keeps for ``key`` (its track is gone)."""
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

    def step(self, track: Track, candidate: Decision, decision: Decision | None) -> Decision | None:
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

    def step(self, track: Track, candidate: Decision, decision: Decision | None) -> Decision | None:
        key = candidate.key
        last = self._last.get(key)
        if decision is None:
            due = (
                self.max_s is not None
                and last is not None
                and track.on
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

    def step(self, track: Track, candidate: Decision, decision: Decision | None) -> Decision | None:
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

    def step(self, track: Track, candidate: Decision, decision: Decision | None) -> Decision | None:
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


# -- the engine ---------------------------------------------------------------------------


class FilterEngine:
    """One pipeline's filter chain with the state of every key.

    Sensors: ``step(ts, seq, score, label)`` per sample (``key`` names the signal when a
    pipeline has several), ``close_all`` at shutdown.

    Vision with a tracker that decides the lifecycle itself: per frame, ``offer`` each of the
    tracker's start/update/end (key = track id; the state stages are skipped, the report
    stages apply), then ``tick(ts, seq)`` once, which emits the heartbeats ``report_interval``
    owes to open tracks that got nothing this frame. A vision pipeline without such a tracker
    may instead ``step`` per track and frame with the detection's score and ``close`` a key
    when its track is lost. One key is fed by ``step`` or by ``offer``, never both.
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        level = next((s for s in stages if isinstance(s, Threshold | Hysteresis)), None)
        debounce = next((s for s in stages if isinstance(s, Debounce)), None)
        self.lifecycle = level is not None
        self._on_level = level.on_level if level is not None else 0.0
        self._off_level = level.off_level if level is not None else 0.0
        self._n = debounce.n if debounce is not None else 1
        self._m = debounce.m if debounce is not None else 1
        self._reports: list[ReportStage] = [
            s for s in stages if not isinstance(s, Threshold | Hysteresis | Debounce)
        ]
        self._updates = any(s.wants_updates for s in self._reports)
        self._heartbeats = any(
            isinstance(s, ReportInterval) and s.max_s is not None for s in self._reports
        )
        self._tracks: dict[str, Track] = {}
        self.counters = FilterCounters()

    def step(self, ts: float, seq: int, score: float, label: str, key: str = "") -> Decision | None:
        """Feed one sample of ``key``; return the event it makes, if any."""
        track = self._tracks.get(key)
        if track is None:
            track = self._track(key)
        if not self.lifecycle:
            instant = Decision("instant", key, label, score, score, seq, ts, seq, ts)
            return self._report(track, instant) if self._reports else instant
        raw = score >= (self._off_level if track.raw else self._on_level)
        track.raw = raw
        history = track.history
        if len(history) == self._m and history.popleft()[0]:
            track.count_on -= 1
        history.append((raw, score, label))
        if raw:
            track.count_on += 1
        if track.on:
            if score > track.peak:
                track.peak = score
            if len(history) - track.count_on >= self._n:
                track.on = False
                candidate = track.candidate("end", score, seq, ts)
            elif self._updates:
                candidate = track.candidate("update", score, seq, ts)
            else:
                return None
        elif track.count_on >= self._n:
            triggering = [(s, lab) for on, s, lab in history if on]
            track.on = True
            track.label = Counter(lab for _, lab in triggering).most_common(1)[0][0]
            track.peak = max(s for s, _ in triggering)
            track.start_seq = seq
            track.start_ts = ts
            candidate = track.candidate("start", score, seq, ts)
        else:
            return None
        if not self._reports:
            return candidate
        return self._report(track, candidate)

    def offer(
        self, key: str, state: State, ts: float, seq: int, score: float, label: str
    ) -> Decision | None:
        """Feed a lifecycle decision made elsewhere (a tracker's start/update/end for track
        ``key``) through the report stages; return it if it passes. The label is the start's
        for the whole event (the tracker's majority label when it starts), so dedup and the
        cloud see one incident under one label. An update or end for a key without an open
        event, or a start for an open one, is counted (``invalid``) and dropped."""
        track = self._tracks.get(key)
        opened = track is not None and track.on
        if (state == "start") == opened or state == "instant":
            self.counters.invalid += 1
            return None
        if track is None:
            track = self._track(key)
        if state == "start":
            track.on, track.label, track.peak = True, label, score
            track.start_seq, track.start_ts = seq, ts
        elif score > track.peak:
            track.peak = score
        track.value = score
        if state == "end":
            track.on = False
        decision = track.candidate(state, score, seq, ts)
        out = self._report(track, decision) if self._reports else decision
        if state == "end":
            self._forget(key)
        return out

    def tick(self, ts: float, seq: int) -> list[Decision]:
        """Heartbeats due at ``ts`` for open keys (vision: call once per frame after
        ``offer``); empty unless the chain has a ``report_interval`` with ``max_s``."""
        if not self._heartbeats:
            return []
        out = []
        for track in list(self._tracks.values()):
            if track.on and track.emitted:
                candidate = track.candidate("update", track.value, seq, ts)
                decision = self._run_stages(track, candidate, None)
                if decision is not None:
                    out.append(decision)
        return out

    def close(self, key: str, ts: float, seq: int) -> Decision | None:
        """End ``key``'s open event (its source or track is gone) and forget the key."""
        track = self._tracks.get(key)
        if track is None:
            return None
        decision = None
        if self.lifecycle and track.on:
            track.on = False
            end = track.candidate("end", track.peak, seq, ts)
            decision = self._report(track, end) if self._reports else end
        self._forget(key)
        return decision

    def close_all(self, ts: float, seq: int) -> list[Decision]:
        """End every open event (shutdown, source exhausted)."""
        closed = (self.close(key, ts, seq) for key in list(self._tracks))
        return [d for d in closed if d is not None]

    def active(self, key: str = "") -> bool:
        """Whether ``key`` has an open event."""
        track = self._tracks.get(key)
        return track is not None and track.on

    def _track(self, key: str) -> Track:
        track = Track(key, history=deque(maxlen=self._m))
        if not self.lifecycle:
            track.on = track.emitted = True  # a value chain reports all the time
        self._tracks[key] = track
        return track

    def _forget(self, key: str) -> None:
        del self._tracks[key]
        for stage in self._reports:
            stage.forget(key)

    def _report(self, track: Track, candidate: Decision) -> Decision | None:
        state = candidate.state
        if state == "start":
            decision = self._run_stages(track, candidate, candidate)
            track.emitted = decision is not None
            return decision
        if not track.emitted:  # a muted event (value chains are always emitted)
            self.counters.muted += state == "end"
            return None
        return self._run_stages(track, candidate, candidate)

    def _run_stages(
        self, track: Track, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        for stage in self._reports:
            passed = stage.step(track, candidate, decision)
            if passed is None and decision is not None:
                if candidate.state == "end":
                    passed = decision  # a started event always ends, whatever a stage says
                else:
                    self.counters.dropped[stage.type] += 1
            decision = passed
        return decision


def build_engine(configs: Sequence[FilterStageConfig]) -> FilterEngine:
    """A fresh engine (with its own state) for a pipeline's ``filters`` list."""
    return FilterEngine([STAGES[c.type](c) for c in configs])
