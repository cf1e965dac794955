"""What every sensor source yields: timestamped multi-channel readings, and its health.

A sensor source (a CSV replay, an MQTT topic, a Modbus device, an OPC UA server) yields
``Readings``: a batch of rows, each a timestamp and one value per channel of the source.
Batches, not one object per reading, because a replay moves millions of rows a second and
numpy does that in bulk; a live source yields batches of one or a few rows. A channel that
a row does not carry (an MQTT message with one of three fields, an OPC UA node that did not
change) is NaN there: ``windows.py`` holds or interpolates it.

Bad readings (a timeout, a value that cannot be parsed) never stop a stream: the source
counts them per reason in its ``SourceHealth`` and goes on. The health object logs state
changes only: the first failure once, the recovery once, a lost connection once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Readings:
    """A batch of readings: ``ts[i]`` (seconds since the epoch) and ``values[i, c]``.

    ``values`` has one column per channel of the source, in the source's ``channels`` order;
    NaN where a row does not carry that channel. Rows of one batch are in time order.
    """

    ts: FloatArray
    """Shape ``[N]``."""
    values: FloatArray
    """Shape ``[N, C]``."""

    def __post_init__(self) -> None:
        if self.ts.ndim != 1 or self.values.ndim != 2 or self.values.shape[0] != len(self.ts):
            raise ValueError(
                f"readings: ts {self.ts.shape}, values {self.values.shape}: not [N], [N, C]"
            )

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def one(cls, ts: float, values: Sequence[float]) -> Readings:
        """A batch of one reading."""
        return cls(np.array([ts], dtype=np.float64), np.array([values], dtype=np.float64))

    @classmethod
    def rows(cls, rows: Sequence[tuple[float, Sequence[float]]], channels: int) -> Readings:
        """A batch from ``(ts, values)`` rows (each ``values`` has ``channels`` entries)."""
        ts = np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))
        values = np.array([row[1] for row in rows], dtype=np.float64).reshape(len(rows), channels)
        return cls(ts, values)


class ReadingSource(Protocol):
    """A stream of readings from one device, file or topic, paced by the source itself."""

    @property
    def channels(self) -> tuple[str, ...]:
        """The names of the value columns, in order."""
        ...

    @property
    def rate_hz(self) -> float | None:
        """Readings per second when the source is paced (a replay, a poll); None when
        readings come when they come (a topic, a subscription)."""
        ...

    @property
    def health(self) -> SourceHealth:
        """The source's counters (bad readings per reason, gaps)."""
        ...

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        """Yield batches until the source ends or ``stop`` is set (waits on ``stop``)."""
        ...


class SourceHealth:
    """Counters of one source, shared by its threads; logs transitions, not repetitions.

    ``bad`` counts bad readings per reason (``timeout``, ``unparseable``, ``late``, ...);
    ``gaps`` counts outages (a server that disappeared), ``missed`` the readings a polled
    source could not take meanwhile.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.readings = 0
        self.bad: Counter[str] = Counter()
        self.gaps = 0
        self.missed = 0
        self._lock = threading.Lock()
        self._failing: str | None = None
        self._disconnected = False

    def ok(self, n: int = 1) -> None:
        """``n`` good readings; the first after bad ones logs the recovery."""
        with self._lock:
            self.readings += n
            failing, self._failing = self._failing, None
        if failing is not None:
            log.info("source %s: readings are good again (after %s)", self.name, failing)

    def bad_reading(self, reason: str, detail: str) -> None:
        """One bad reading, dropped; the first of a run of bad ones is logged with ``detail``."""
        with self._lock:
            self.bad[reason] += 1
            first = self._failing is None
            if first:
                self._failing = reason
        if first:
            log.warning("source %s: bad reading (%s): %s", self.name, reason, detail)

    def disconnected(self, detail: str) -> bool:
        """The device or server is gone: a gap starts. Logged once; True if it is news."""
        with self._lock:
            news = not self._disconnected
            if news:
                self._disconnected = True
                self.gaps += 1
        if news:
            log.warning("source %s: lost %s", self.name, detail)
        return news

    def connected(self, detail: str) -> None:
        """The device or server answers (again); the recovery is logged once."""
        with self._lock:
            recovered, self._disconnected = self._disconnected, False
        if recovered:
            log.info("source %s: %s again", self.name, detail)

    def add_missed(self, n: int) -> None:
        """Readings a polled source could not take during a gap."""
        with self._lock:
            self.missed += n

    @property
    def is_connected(self) -> bool:
        return not self._disconnected

    def snapshot(self) -> dict[str, int]:
        """The counters as flat numbers (``bad_<reason>`` per reason), for status and metrics."""
        with self._lock:
            counts = {"readings": self.readings, "gaps": self.gaps, "missed": self.missed}
            counts.update({f"bad_{reason}": n for reason, n in sorted(self.bad.items())})
        return counts
