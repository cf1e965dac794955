"""What every source produces: numbered, timestamped windows of data."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Sample:
    """One window of data: ``seq`` counts from 0 without gaps, ``ts`` is its capture time.

    ``ts`` is seconds since the epoch (a float, not a datetime: building a datetime per
    window costs more than it is worth; events convert the few that matter).
    """

    seq: int
    ts: float
    data: npt.NDArray[np.float32] | npt.NDArray[np.uint8]
    """A sensor window (float32) or a camera frame (uint8, height x width x 3, BGR)."""


class Source(Protocol):
    """A finite or endless stream of samples, paced by the source itself."""

    @property
    def period_s(self) -> float:
        """Seconds of signal per sample (the time between two consecutive ``ts``)."""
        ...

    @property
    def window(self) -> int:
        """Values per sample."""
        ...

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        """Yield samples until the source ends or ``stop`` is set (waits on ``stop``)."""
        ...


def simulated_clock(
    period_s: float,
    stop: threading.Event,
    *,
    speed: float,
    duration_s: float | None,
    monotonic: Callable[[], float],
    ready_after_s: float = 0.0,
) -> Iterator[tuple[int, float]]:
    """``(seq, t_s)`` of a simulated source: sample ``seq`` starts ``t_s`` seconds in.

    Paced to ``speed`` times real time (0: no waiting), each sample released
    ``ready_after_s`` after its start (a sensor window exists once its last value is
    measured; a frame at once); ends at ``duration_s`` or when ``stop`` is set.
    """
    start = monotonic()
    seq = 0
    while not stop.is_set():
        t_s = seq * period_s
        if duration_s is not None and t_s >= duration_s:
            return
        if speed > 0:
            delay = start + (t_s + ready_after_s) / speed - monotonic()
            if delay > 0 and stop.wait(delay):
                return
        yield seq, t_s
        seq += 1
