"""Filters turn a stream of per-window scores into a few event decisions. Pure logic, no I/O.

A filter sees one ``(seq, score, label)`` per window and answers with a ``Decision`` or
``None``. The event lifecycle lives here too: a fault that lasts a thousand windows is one
``start`` and one ``end``, never a thousand events. Filters are built from config by
``build_filter``, a table keyed by the config's ``type``, so hysteresis, deadband, report
intervals, rate limits and dedup can join later without touching the pipeline.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from edge_agent.config import ThresholdFilterConfig


@dataclass(frozen=True, slots=True)
class Decision:
    """An event lifecycle change decided at window ``seq``.

    ``score`` is the highest score of the windows that triggered a ``start``, and the peak
    score over the whole event for an ``end``; ``start_seq`` is the window the event
    started at, so ``seq - start_seq`` is its length in windows.
    """

    state: Literal["start", "end"]
    label: str
    score: float
    seq: int
    start_seq: int


class Filter(Protocol):
    """One stage of event filtering for one pipeline (holds that pipeline's state)."""

    def step(self, seq: int, score: float, label: str) -> Decision | None:
        """Feed one window; return a decision when the event state changes."""
        ...

    def close(self, seq: int) -> Decision | None:
        """End an open event because the stream ends (shutdown, source exhausted)."""
        ...


class ThresholdDebounce:
    """Threshold on the anomaly score, debounced N of M, with a start/end lifecycle.

    An event starts when at least ``n`` of the last ``m`` windows score at or above
    ``threshold`` and ends when at least ``n`` of the last ``m`` score below it. The config
    requires ``2n > m``, so both conditions can never hold at once and the state cannot flap.
    """

    __slots__ = (
        "_above",
        "_history",
        "_label",
        "_m",
        "_n",
        "_on",
        "_peak",
        "_start_seq",
        "_threshold",
    )

    def __init__(self, threshold: float, n: int, m: int) -> None:
        if not (0 < n <= m and 2 * n > m):
            raise ValueError(f"need m/2 < n <= m, got n={n}, m={m}")
        self._threshold = threshold
        self._n = n
        self._m = m
        # (above, score, label) of the last m windows, and how many of them are above.
        self._history: deque[tuple[bool, float, str]] = deque(maxlen=m)
        self._above = 0
        self._on = False
        self._label = ""
        self._peak = 0.0
        self._start_seq = 0

    @property
    def active(self) -> bool:
        """Whether an event is open."""
        return self._on

    def step(self, seq: int, score: float, label: str) -> Decision | None:
        above = score >= self._threshold
        history = self._history
        if len(history) == self._m and history[0][0]:
            self._above -= 1
        history.append((above, score, label))
        if above:
            self._above += 1
        if self._on:
            if score > self._peak:
                self._peak = score
            if len(history) - self._above >= self._n:
                self._on = False
                return Decision("end", self._label, self._peak, seq, self._start_seq)
            return None
        if self._above >= self._n:
            triggering = [(s, lab) for a, s, lab in history if a]
            self._on = True
            self._label = Counter(lab for _, lab in triggering).most_common(1)[0][0]
            self._peak = max(s for s, _ in triggering)
            self._start_seq = seq
            return Decision("start", self._label, self._peak, seq, seq)
        return None

    def close(self, seq: int) -> Decision | None:
        if not self._on:
            return None
        self._on = False
        return Decision("end", self._label, self._peak, seq, self._start_seq)


FilterFactory = Callable[[ThresholdFilterConfig], Filter]


def _threshold(config: ThresholdFilterConfig) -> Filter:
    return ThresholdDebounce(config.threshold, config.debounce.n, config.debounce.m)


FILTERS: dict[str, FilterFactory] = {"threshold": _threshold}


def build_filter(config: ThresholdFilterConfig) -> Filter:
    """A fresh filter (with its own state) for the config's ``type``."""
    return FILTERS[config.type](config)
