"""The windowing stage: readings in, model inputs out (float32 ``[C, W]`` windows).

One stage for every sensor source. It picks the channels a model takes, in the model's
order; optionally resamples them to a fixed rate (a device polled at an uneven pace, an
OPC UA node that reports on change only); cuts windows of ``size`` columns every ``hop``
columns (overlapping when ``hop < size``, skipping columns when ``hop > size``); and
detects gaps (a server that disappeared): a window that would span one is dropped, or
emitted with ``gap=True``, as the config says.

Rules, in the order a batch meets them:

- A row that carries none of the chosen channels is ignored.
- A reading older than one already taken is late: counted and dropped (sources that can
  deliver out of order put a reorder buffer in front).
- Two consecutive readings further apart than ``max_gap_s`` are a gap. After a gap each
  channel must be read again before the stream goes on, so no value is interpolated or
  held across a gap. ``gaps: drop`` starts the next window after the gap; ``gaps: mark``
  keeps the columns and marks the windows that contain the jump.
- Without ``rate_hz`` each reading is one column, and a channel a row lacks holds its last
  value. With ``rate_hz`` columns sit on a grid ``1/rate_hz`` apart from the moment every
  channel has a value, up to the newest reading: linear interpolation between a channel's
  readings, or the last value (``hold``); a channel not read since a grid time holds its
  last value there (the stream has moved past it, and a report-on-change source sends
  nothing while a value stays put).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from edge_agent.config_types import StrictConfig
from edge_agent.sources.readings import FloatArray, Readings, ReadingSource
from edge_agent.sources.sample import Sample
from shared.errors import ConfigError


class WindowConfig(StrictConfig):
    """How a pipeline cuts a sensor source's readings into model inputs."""

    size: int = Field(ge=1, le=1_000_000, description="columns (time steps) per window")
    hop: int | None = Field(
        default=None, ge=1, le=1_000_000, description="columns between window starts; = size"
    )
    channels: list[str] | None = Field(
        default=None, min_length=1, description="channels in the model's order; all if unset"
    )
    rate_hz: float | None = Field(
        default=None, gt=0, le=1_000_000, description="resample to this rate; unset: as read"
    )
    interpolation: Literal["linear", "hold"] = "linear"
    max_gap_s: float | None = Field(
        default=None, gt=0, description="readings further apart are a gap; unset: never"
    )
    gaps: Literal["drop", "mark"] = Field(
        default="drop", description="a window spanning a gap: dropped, or emitted marked"
    )

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel may appear once")
        if self.interpolation != "linear" and self.rate_hz is None:
            raise ValueError("interpolation applies when resampling (rate_hz) only")
        return self

    @property
    def step(self) -> int:
        """Columns between two window starts."""
        return self.size if self.hop is None else self.hop


@dataclass(frozen=True, slots=True)
class Window:
    """One model input: ``data[c, w]``; ``ts`` is the time of its last column."""

    ts: float
    data: npt.NDArray[np.float32]
    gap: bool = False
    """True when a gap lies inside the window (``gaps: mark`` only)."""


@dataclass(frozen=True, slots=True)
class WindowSample(Sample):
    """A ``Sample`` of a windowed sensor source, with the window's gap mark."""

    gap: bool = False


def _forward_fill(values: FloatArray) -> FloatArray:
    """Each NaN replaced by the last number above it in its column (NaN if none)."""
    rows = np.arange(values.shape[0])[:, np.newaxis]
    index = np.where(np.isnan(values), 0, rows)
    np.maximum.accumulate(index, axis=0, out=index)
    filled: FloatArray = np.take_along_axis(values, index, axis=0)
    return filled


class Windower:
    """Turns a source's batches of readings into windows; pure, one per stream."""

    def __init__(self, config: WindowConfig, source_channels: Sequence[str]) -> None:
        chosen = list(source_channels) if config.channels is None else config.channels
        unknown = [name for name in chosen if name not in source_channels]
        if unknown:
            raise ConfigError(
                f"window.channels: {', '.join(map(repr, unknown))} not among the source's "
                f"channels ({', '.join(source_channels)})"
            )
        self.config = config
        self.channels = tuple(chosen)
        self._columns = np.array([list(source_channels).index(n) for n in chosen], dtype=np.intp)
        self._size, self._hop = config.size, config.step
        channels = len(chosen)
        self._last_t = -math.inf
        self._known_t = np.full(channels, np.nan)
        self._known_v = np.full(channels, np.nan)
        self._origin: float | None = None
        self._next_k = 0
        self._buf_v = np.empty((channels, 0), dtype=np.float32)
        self._buf_t = np.empty(0, dtype=np.float64)
        self._buf_gap = np.empty(0, dtype=bool)
        self._skip = 0
        self._gap_pending = False
        self.late = 0
        """Readings dropped because an older one came after a newer one."""
        self.gaps = 0
        """Gaps seen (consecutive readings more than ``max_gap_s`` apart)."""
        self.windows = 0
        self.marked = 0
        """Windows emitted with ``gap=True``."""

    def push(self, batch: Readings) -> list[Window]:
        """Take a batch of the source's readings; return the windows it completes."""
        values = batch.values[:, self._columns]
        ts = batch.ts
        carried = ~np.isnan(values).all(axis=1)
        if not carried.all():
            ts, values = ts[carried], values[carried]
        if len(ts) == 0:
            return []
        newest = np.maximum.accumulate(np.concatenate(([self._last_t], ts)))
        on_time = ts >= newest[:-1]
        if not on_time.all():
            self.late += int(np.count_nonzero(~on_time))
            ts, values = ts[on_time], values[on_time]
            if len(ts) == 0:
                return []
        windows: list[Window] = []
        for start, stop, after_gap in self._segments(ts):
            if after_gap:
                self._gap()
            self._take(ts[start:stop], values[start:stop])
            windows += self._cut()  # before a gap can drop the columns
        self._last_t = float(ts[-1])
        return windows

    def _segments(self, ts: FloatArray) -> Iterator[tuple[int, int, bool]]:
        """``(start, stop, after_gap)`` runs of ``ts`` without a gap inside."""
        max_gap = self.config.max_gap_s
        if max_gap is None:
            yield 0, len(ts), False
            return
        steps = np.diff(ts, prepend=self._last_t if self._last_t > -math.inf else ts[0])
        starts = np.flatnonzero(steps > max_gap).tolist()
        bounds = [0, *[s for s in starts if s > 0], len(ts)]
        first_is_gap = bool(starts) and starts[0] == 0
        for i in range(len(bounds) - 1):
            yield bounds[i], bounds[i + 1], i > 0 or first_is_gap

    def _gap(self) -> None:
        self.gaps += 1
        self._known_t[:] = np.nan
        self._known_v[:] = np.nan
        self._origin = None
        if self.config.gaps == "drop":
            self._buf_v = self._buf_v[:, :0]
            self._buf_t = self._buf_t[:0]
            self._buf_gap = self._buf_gap[:0]
            self._skip = 0
        else:
            self._gap_pending = True

    def _take(self, ts: FloatArray, values: FloatArray) -> None:
        """Turn one gap-free run of readings into columns."""
        if self.config.rate_hz is None:
            self._take_as_read(ts, values)
        else:
            self._take_resampled(ts, values, self.config.rate_hz)

    def _take_as_read(self, ts: FloatArray, values: FloatArray) -> None:
        if not np.isnan(values).any():  # the common case: every row has every channel
            self._known_t[:], self._known_v[:] = ts[-1], values[-1]
            self._append(values.T.astype(np.float32), ts)
            return
        filled = _forward_fill(np.vstack((self._known_v, values)))[1:]
        self._remember(ts, values)
        complete = ~np.isnan(filled).any(axis=1)
        if not complete.all():  # before every channel has been read once
            ts, filled = ts[complete], filled[complete]
        self._append(filled.T.astype(np.float32), ts)

    def _take_resampled(self, ts: FloatArray, values: FloatArray, rate: float) -> None:
        known_t, known_v = self._known_t.copy(), self._known_v.copy()
        self._remember(ts, values)
        if np.isnan(self._known_t).any():
            return  # a channel has not been read yet: no grid
        if self._origin is None:
            # The grid starts when the last channel to be read first was read.
            firsts = [
                known_t[c] if not np.isnan(known_t[c]) else ts[~np.isnan(values[:, c])][0]
                for c in range(values.shape[1])
            ]
            self._origin, self._next_k = float(max(firsts)), 0
        last_k = math.floor((float(ts[-1]) - self._origin) * rate + 1e-9)
        if last_k < self._next_k:
            return
        grid = self._origin + np.arange(self._next_k, last_k + 1, dtype=np.float64) / rate
        self._next_k = last_k + 1
        columns = np.empty((values.shape[1], len(grid)), dtype=np.float32)
        for c in range(values.shape[1]):
            read = ~np.isnan(values[:, c])
            points_t, points_v = ts[read], values[read, c]
            if not np.isnan(known_t[c]):
                points_t = np.concatenate(([known_t[c]], points_t))
                points_v = np.concatenate(([known_v[c]], points_v))
            columns[c] = self._interpolate(grid, points_t, points_v)
        self._append(columns, grid)

    def _interpolate(
        self, grid: FloatArray, points_t: FloatArray, points_v: FloatArray
    ) -> FloatArray:
        if self.config.interpolation == "linear":
            # Past a channel's last reading np.interp holds its last value.
            return np.interp(grid, points_t, points_v)
        index = np.searchsorted(points_t, grid, side="right") - 1
        held: FloatArray = points_v[np.maximum(index, 0)]
        return held

    def _remember(self, ts: FloatArray, values: FloatArray) -> None:
        """Each channel's last reading so far."""
        for c in range(values.shape[1]):
            read = np.flatnonzero(~np.isnan(values[:, c]))
            if len(read):
                self._known_t[c] = ts[read[-1]]
                self._known_v[c] = values[read[-1], c]

    def _append(self, columns: npt.NDArray[np.float32], ts: FloatArray) -> None:
        gap = np.zeros(len(ts), dtype=bool)
        if self._gap_pending and len(ts):
            gap[0], self._gap_pending = True, False
        if self._skip:
            dropped = min(self._skip, len(ts))
            self._skip -= dropped
            columns, ts, gap = columns[:, dropped:], ts[dropped:], gap[dropped:]
        self._buf_v = np.concatenate((self._buf_v, columns), axis=1)
        self._buf_t = np.concatenate((self._buf_t, ts))
        self._buf_gap = np.concatenate((self._buf_gap, gap))

    def _cut(self) -> list[Window]:
        size, hop, length = self._size, self._hop, len(self._buf_t)
        if length < size:
            return []
        count = (length - size) // hop + 1
        windows: list[Window] = []
        for i in range(count):
            s = i * hop
            gap = bool(self._buf_gap[s + 1 : s + size].any())
            windows.append(
                Window(float(self._buf_t[s + size - 1]), self._buf_v[:, s : s + size].copy(), gap)
            )
            self.marked += gap
        used = count * hop
        self._skip = max(used - length, 0)
        self._buf_v = self._buf_v[:, used:]
        self._buf_t = self._buf_t[used:]
        self._buf_gap = self._buf_gap[used:]
        self.windows += count
        return windows


class WindowedSource:
    """A sensor source seen through a ``Windower``: the ``Source`` the pipelines consume.

    ``data`` of each sample is a float32 ``[C, W]`` window; ``ts`` is its last column's time.
    """

    def __init__(self, source: ReadingSource, config: WindowConfig) -> None:
        rate = config.rate_hz if config.rate_hz is not None else source.rate_hz
        if rate is None:
            raise ConfigError(
                "window.rate_hz: the source reads at no fixed rate (it reports when values "
                "arrive); give the rate to resample to"
            )
        self.source = source
        self.config = config
        self._rate_hz = rate
        self.windower = Windower(config, source.channels)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.windower.channels

    @property
    def period_s(self) -> float:
        return self.config.step / self._rate_hz

    @property
    def window(self) -> int:
        return self.config.size

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        seq = 0
        for batch in self.source.readings(stop):
            for window in self.windower.push(batch):
                yield WindowSample(seq, window.ts, window.data, gap=window.gap)
                seq += 1
