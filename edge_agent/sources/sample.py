"""What every source produces: numbered, timestamped windows of data."""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
