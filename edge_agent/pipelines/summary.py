"""Periodic pipeline summaries: what a pipeline read, inferred, emitted and sent per window.

The edge sends a few events instead of raw data; a summary is how it shows that, and why
a pipeline is quiet. The per-window hot path never touches this module's objects per
sample: counters are the pipeline's own cumulative integers (a summary takes their
difference since the previous one), and signals are folded in once per inference call with
``SignalAccumulator.merge`` from plain local arithmetic. Pure logic, no I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shared.messages import ModelRef, PipelineSummary, SignalStats

_TICK = timedelta(microseconds=1)
SIGNAL_DIGITS = 6
"""Signals are rounded on the wire: a summary is for trends, not for bit-exact replays."""


class SummaryCounters(Protocol):
    """The cumulative counters a summary is the window difference of."""

    samples_in: int
    inferences: int
    gated: int
    raw_bytes: int
    sent_bytes: int


@dataclass(slots=True)
class SignalAccumulator:
    """min, max, sum and count of one signal since the last summary; O(1) memory."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        """Fold in one value (for signals that arrive one by one, e.g. objects per frame)."""
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    def merge(self, count: int, total: float, low: float, high: float) -> None:
        """Fold in what a caller accumulated in local variables over a batch."""
        self.count += count
        self.total += total
        if low < self.low:
            self.low = low
        if high > self.high:
            self.high = high

    def take(self) -> SignalStats | None:
        """The stats so far (None when nothing was seen), and start over."""
        if self.count == 0:
            return None
        low, high = round(self.low, SIGNAL_DIGITS), round(self.high, SIGNAL_DIGITS)
        # sum/count can land a rounding error outside [min, max] when all values are equal.
        mean = min(max(round(self.total / self.count, SIGNAL_DIGITS), low), high)
        stats = SignalStats(min=low, mean=mean, max=high, count=self.count)
        self.count, self.total, self.low, self.high = 0, 0.0, math.inf, -math.inf
        return stats


@dataclass(slots=True)
class SummaryWindow:
    """One pipeline's current summary window: where its counters stood at the start, the
    events it emitted by label, and its signals."""

    start: datetime
    baseline: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    events_by_label: Counter[str] = field(default_factory=Counter)
    signals: dict[str, SignalAccumulator] = field(default_factory=dict)

    @classmethod
    def starting(cls, start: float, counters: SummaryCounters) -> SummaryWindow:
        """A window that begins at ``start`` (epoch seconds), with the counters as they are."""
        return cls(datetime.fromtimestamp(start, UTC), _snapshot(counters))

    def signal(self, name: str) -> SignalAccumulator:
        """The accumulator of ``name``; keep it: it is reset in place, never replaced."""
        accumulator = self.signals.get(name)
        if accumulator is None:
            accumulator = self.signals[name] = SignalAccumulator()
        return accumulator

    def close(
        self,
        *,
        end: float,
        counters: SummaryCounters,
        agent_id: str,
        pipeline: str,
        model: ModelRef,
    ) -> PipelineSummary:
        """The summary of the window that ends at ``end``; the next window starts there."""
        window_end = datetime.fromtimestamp(end, UTC)
        if window_end <= self.start:
            # The wall clock stepped back (NTP), or two summaries in one microsecond: windows
            # must still be distinct, as the cloud keys a summary by its start.
            window_end = self.start + _TICK
        now = _snapshot(counters)
        samples_in, inferences, gated, raw_bytes, sent_bytes = (
            a - b for a, b in zip(now, self.baseline, strict=True)
        )
        signals = {name: stats for name, acc in self.signals.items() if (stats := acc.take())}
        summary = PipelineSummary(
            agent_id=agent_id,
            pipeline=pipeline,
            window_start=self.start,
            window_end=window_end,
            samples_in=samples_in,
            inferences=inferences,
            gated=gated,
            events_by_label=dict(self.events_by_label),
            signals=signals,
            raw_bytes=raw_bytes,
            sent_bytes=sent_bytes,
            model=model,
        )
        self.start, self.baseline = window_end, now
        self.events_by_label.clear()
        return summary


def _snapshot(c: SummaryCounters) -> tuple[int, int, int, int, int]:
    return (c.samples_in, c.inferences, c.gated, c.raw_bytes, c.sent_bytes)
