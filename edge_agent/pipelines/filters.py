"""The filter engine: one for sensors and vision. Pure logic, no I/O, no clock reads.

A pipeline declares an ordered chain of stages (config ``filters:``); ``build_engine`` turns
it into a ``FilterEngine`` through ``STAGES``, the table of stages keyed by their ``type``
(``edge_agent.pipelines.filter_stages``). Time comes only from the samples' timestamps, so a
chain is deterministic and testable.

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

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from edge_agent.pipelines.filter_config import FilterStageConfig
from edge_agent.pipelines.filter_stages import (
    STAGES,
    Debounce,
    Hysteresis,
    ReportInterval,
    ReportStage,
    Stage,
    Threshold,
)
from shared.messages import EventState


@dataclass(frozen=True, slots=True)
class Decision:
    """An event decided by the engine for ``key`` at sample ``seq`` (time ``ts``).

    ``score`` is the event's peak so far: the highest score of the samples that triggered a
    ``start``, the peak over the whole event for an ``update`` or ``end``, the sample's own
    for an ``instant``. ``value`` is the score of the sample that produced the decision.
    ``start_seq``/``start_ts`` are where the event started, so ``ts - start_ts`` is its age.
    """

    state: EventState
    key: str
    label: str
    score: float
    value: float
    seq: int
    ts: float
    start_seq: int
    start_ts: float


def _majority(history: deque[tuple[bool, float, str]]) -> tuple[str, float]:
    """The most common label of the samples that are on (the first to reach the count on a
    tie, as ``Counter.most_common``) and their highest score."""
    counts: dict[str, int] = {}
    peak = -math.inf
    for on, score, label in history:
        if on:
            counts[label] = counts.get(label, 0) + 1
            if score > peak:
                peak = score
    return max(counts, key=counts.__getitem__), peak


@dataclass(slots=True)
class KeyState:
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

    def candidate(self, state: EventState, value: float, seq: int, ts: float) -> Decision:
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
        self._keys: dict[str, KeyState] = {}
        self.counters = FilterCounters()

    def step(self, ts: float, seq: int, score: float, label: str, key: str = "") -> Decision | None:
        """Feed one sample of ``key``; return the event it makes, if any."""
        key_state = self._keys.get(key)
        if key_state is None:
            key_state = self._add_key(key)
        if not self.lifecycle:
            instant = Decision("instant", key, label, score, score, seq, ts, seq, ts)
            return self._report(key_state, instant) if self._reports else instant
        raw = score >= (self._off_level if key_state.raw else self._on_level)
        key_state.raw = raw
        history = key_state.history
        if not raw and not key_state.count_on and not key_state.on and len(history) == self._m:
            # The common case, a quiet signal: the history is m offs and stays so (an off's
            # score and label are never read), so there is nothing to update.
            return None
        if len(history) == self._m and history.popleft()[0]:
            key_state.count_on -= 1
        history.append((raw, score, label))
        if raw:
            key_state.count_on += 1
        if key_state.on:
            if score > key_state.peak:
                key_state.peak = score
            if len(history) - key_state.count_on >= self._n:
                key_state.on = False
                candidate = key_state.candidate("end", score, seq, ts)
            elif self._updates:
                candidate = key_state.candidate("update", score, seq, ts)
            else:
                return None
        elif key_state.count_on >= self._n:
            key_state.on = True
            key_state.label, key_state.peak = _majority(history)
            key_state.start_seq = seq
            key_state.start_ts = ts
            candidate = key_state.candidate("start", score, seq, ts)
        else:
            return None
        if not self._reports:
            return candidate
        return self._report(key_state, candidate)

    def offer(
        self, key: str, state: EventState, ts: float, seq: int, score: float, label: str
    ) -> Decision | None:
        """Feed a lifecycle decision made elsewhere (a tracker's start/update/end for track
        ``key``) through the report stages; return it if it passes. The label is the start's
        for the whole event (the tracker's majority label when it starts), so dedup and the
        cloud see one incident under one label. An update or end for a key without an open
        event, or a start for an open one, is counted (``invalid``) and dropped."""
        key_state = self._keys.get(key)
        opened = key_state is not None and key_state.on
        if (state == "start") == opened or state == "instant":
            self.counters.invalid += 1
            return None
        if key_state is None:
            key_state = self._add_key(key)
        if state == "start":
            key_state.on, key_state.label, key_state.peak = True, label, score
            key_state.start_seq, key_state.start_ts = seq, ts
        elif score > key_state.peak:
            key_state.peak = score
        key_state.value = score
        if state == "end":
            key_state.on = False
        decision = key_state.candidate(state, score, seq, ts)
        out = self._report(key_state, decision) if self._reports else decision
        if state == "end":
            self._forget(key)
        return out

    def tick(self, ts: float, seq: int) -> list[Decision]:
        """Heartbeats due at ``ts`` for open keys (vision: call once per frame after
        ``offer``); empty unless the chain has a ``report_interval`` with ``max_s``."""
        if not self._heartbeats:
            return []
        out = []
        for key_state in list(self._keys.values()):
            if key_state.on and key_state.emitted:
                candidate = key_state.candidate("update", key_state.value, seq, ts)
                decision = self._run_stages(key_state, candidate, None)
                if decision is not None:
                    out.append(decision)
        return out

    def close(self, key: str, ts: float, seq: int) -> Decision | None:
        """End ``key``'s open event (its source or track is gone) and forget the key."""
        key_state = self._keys.get(key)
        if key_state is None:
            return None
        decision = None
        if self.lifecycle and key_state.on:
            key_state.on = False
            end = key_state.candidate("end", key_state.peak, seq, ts)
            decision = self._report(key_state, end) if self._reports else end
        self._forget(key)
        return decision

    def close_all(self, ts: float, seq: int) -> list[Decision]:
        """End every open event (shutdown, source exhausted)."""
        closed = (self.close(key, ts, seq) for key in list(self._keys))
        return [d for d in closed if d is not None]

    def active(self, key: str = "") -> bool:
        """Whether ``key`` has an open event."""
        key_state = self._keys.get(key)
        return key_state is not None and key_state.on

    def retuned(self, configs: Sequence[FilterStageConfig]) -> FilterEngine:
        """An engine for ``configs`` (the same stage types, new parameters) that carries every
        key's lifecycle over: an open event stays open with its label, peak and start, and
        the debounce keeps the last ``m`` raw states. Report stages start afresh; the
        counters continue. Raises ValueError if ``configs`` changes the kind of chain."""
        engine = build_engine(configs)
        if engine.lifecycle != self.lifecycle:
            raise ValueError("a level stage cannot be added or removed at run time")
        for key, state in self._keys.items():
            history = deque(state.history, maxlen=engine._m)
            count_on = sum(1 for raw, _, _ in history if raw)
            engine._keys[key] = replace(state, history=history, count_on=count_on)
        engine.counters = self.counters
        return engine

    def _add_key(self, key: str) -> KeyState:
        key_state = KeyState(key, history=deque(maxlen=self._m))
        if not self.lifecycle:
            key_state.on = key_state.emitted = True  # a value chain reports all the time
        self._keys[key] = key_state
        return key_state

    def _forget(self, key: str) -> None:
        del self._keys[key]
        for stage in self._reports:
            stage.forget(key)

    def _report(self, key_state: KeyState, candidate: Decision) -> Decision | None:
        state = candidate.state
        if state == "start":
            decision = self._run_stages(key_state, candidate, candidate)
            key_state.emitted = decision is not None
            return decision
        if not key_state.emitted:  # a muted event (value chains are always emitted)
            self.counters.muted += state == "end"
            return None
        return self._run_stages(key_state, candidate, candidate)

    def _run_stages(
        self, key_state: KeyState, candidate: Decision, decision: Decision | None
    ) -> Decision | None:
        for stage in self._reports:
            passed = stage.step(key_state, candidate, decision)
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
