"""The ``csv`` source: replay a recording (plain or gzip) as timestamped readings.

The file has a header row. Times come from a ``timestamp`` column (epoch seconds or
milliseconds, or ISO 8601: the rules of ``timestamps``) or from a fixed ``rate_hz`` (row
``i`` at ``i / rate_hz`` after the replay starts); the ``channels`` columns are the values,
an empty cell a reading that row lacks. ``speed`` paces the replay (1 = real time, N = N
times faster, 0 = as fast as possible); ``loop`` starts again at the end, times running on.

Rows are parsed in chunks by numpy (the replay must outrun the models it feeds); a chunk
numpy refuses is parsed again row by row to name the bad cell. ``CsvSourceConfig.check``
reads the whole file and refuses a missing column, a non-numeric cell or timestamps that
go backwards with the file, line and column; at run time the same rows are counted as bad
readings and skipped, and the replay goes on.
"""

from __future__ import annotations

import csv
import gzip
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.sources import timestamps
from edge_agent.sources.readings import FloatArray, Readings, SourceHealth
from shared.errors import ConfigError

CHUNK_BYTES = 1 << 20
"""Rows are parsed about this much text at a time (numpy's per-call cost is then noise)."""
MIN_WAIT_S = 0.005
"""A paced replay releases rows at most this often (a 1 kHz file in batches, not per row)."""


class CsvSourceConfig(StrictConfig):
    """A CSV recording replayed as a sensor."""

    type: Literal["csv"]
    path: FilePath = Field(description="a .csv file, or gzip-compressed (.csv.gz)")
    timestamp: str | None = Field(
        default=None, description="the time column: epoch seconds or ISO 8601"
    )
    rate_hz: float | None = Field(default=None, gt=0, description="rows per second, no time column")
    channels: list[str] | None = Field(
        default=None, min_length=1, description="value columns; unset: every other column"
    )
    units: dict[str, str] = Field(default_factory=dict, description="channel -> unit")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    speed: float = Field(default=1.0, ge=0, description="1 = real time, N = xN, 0 = no waiting")
    loop: bool = Field(default=False, description="start again at the end, times running on")
    rebase: bool = Field(
        default=False, description="shift the file's times so that the replay starts now"
    )

    @model_validator(mode="after")
    def _check_keys(self) -> CsvSourceConfig:
        if (self.timestamp is None) == (self.rate_hz is None):
            raise ValueError("give exactly one of timestamp (a column) and rate_hz")
        if self.channels is not None:
            if len(set(self.channels)) != len(self.channels):
                raise ValueError("channels: each column may appear once")
            if self.timestamp in self.channels:
                raise ValueError(f"channels: {self.timestamp!r} is the timestamp column")
            unknown = sorted(set(self.units) - set(self.channels))
            if unknown:
                raise ValueError(f"units: {', '.join(unknown)} not among the channels")
        return self

    def check(self) -> None:
        """Read the whole file; raise ConfigError naming the key, file, line and column."""
        previous = -math.inf
        with CsvFile.open(self) as table:
            for chunk in table.chunks():
                if chunk.errors:
                    raise ConfigError(f"path: {chunk.errors[0]}")
                backwards = _backwards(chunk.ts, previous)
                if len(backwards):
                    i = int(backwards[0])
                    before = chunk.ts[i - 1] if i else previous
                    raise ConfigError(
                        f"path: {table.path}:{chunk.lines[i]}: column {self.timestamp!r}: "
                        f"timestamps must not go backwards ({chunk.ts[i]!r} after {before!r})"
                    )
                if len(chunk.ts):
                    previous = float(chunk.ts[-1])


def _backwards(ts: FloatArray, previous: float) -> npt.NDArray[np.intp]:
    """Indexes of the timestamps older than one before them."""
    newest = np.maximum.accumulate(np.concatenate(([previous], ts)))[:-1]
    found: npt.NDArray[np.intp] = np.flatnonzero(ts < newest)
    return found


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Parsed rows of a chunk: good rows only, with their file line numbers."""

    ts: FloatArray
    values: FloatArray
    lines: list[int]
    errors: list[str]
    """One message per bad row: ``file:line: column 'x': ...``."""


class CsvFile:
    """An open CSV file read in chunks of parsed rows."""

    def __init__(self, config: CsvSourceConfig, text: IO[str]) -> None:
        self.path = config.path
        self._text = text
        self._delimiter = config.delimiter
        self._rate_hz = config.rate_hz or 1.0  # used when there is no time column
        header_line = text.readline()
        header = next(csv.reader([header_line], delimiter=config.delimiter), [])
        header = [name.strip() for name in header]
        if not header:
            raise ConfigError(f"path: {self.path}:1: the file is empty (expected a header row)")
        self.header = header
        names = config.channels or [n for n in header if n != config.timestamp]
        self.channels = tuple(names)
        self._value_columns = [self._column(n, "channels") for n in names]
        self._ts_column = (
            None if config.timestamp is None else self._column(config.timestamp, "timestamp")
        )
        self._line = 2
        self._row = 0
        self._iso: bool | None = None

    @classmethod
    def open(cls, config: CsvSourceConfig) -> CsvFile:
        try:
            text = _open_text(config.path)
        except OSError as exc:
            raise ConfigError(f"path: cannot read {config.path}: {exc.strerror}") from None
        try:
            return cls(config, text)
        except BaseException:
            text.close()
            raise

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._text.close()

    def _column(self, name: str, key: str) -> int:
        if name not in self.header:
            raise ConfigError(
                f"{key}: {self.path}:1: no column {name!r} in the header ({', '.join(self.header)})"
            )
        return self.header.index(name)

    def chunks(self) -> Iterator[Chunk]:
        """The rest of the file, whole lines of about ``CHUNK_BYTES`` at a time."""
        while True:
            lines = self._text.readlines(CHUNK_BYTES)
            if not lines:
                return
            first_line, first_row = self._line, self._row
            self._line += len(lines)
            chunk = self._fast(lines, first_line, first_row)
            if chunk is None:
                chunk = self._slow(lines, first_line, first_row)
            self._row += len(lines)
            yield chunk

    def _fast(self, lines: list[str], first_line: int, first_row: int) -> Chunk | None:
        """numpy's parser; None when it refuses the chunk (or skipped blank lines)."""
        columns = self._value_columns
        converters: dict[int | str, Callable[[str], Any]] = {}
        if self._ts_column is not None:
            columns = [self._ts_column, *columns]
            if self._iso is None:
                first = next(csv.reader(lines[:1], delimiter=self._delimiter), [])
                if self._ts_column >= len(first):
                    return None
                self._iso = not _is_number(first[self._ts_column])
            if self._iso:
                converters[self._ts_column] = timestamps.from_text
        try:
            table = np.loadtxt(
                lines, delimiter=self._delimiter, usecols=columns, converters=converters or None,
                dtype=np.float64, ndmin=2, comments=None, quotechar='"', encoding=None,
            )  # fmt: skip
        except ValueError:
            return None
        if table.shape[0] != len(lines):
            return None  # blank lines: the slow path keeps the line numbers right
        numbers = list(range(first_line, first_line + len(lines)))
        if self._ts_column is None:
            ts = np.arange(first_row, first_row + len(lines), dtype=np.float64) / self._rate_hz
            return Chunk(ts, table, numbers, [])
        ts = np.ascontiguousarray(table[:, 0])
        if not self._iso:
            ts[np.abs(ts) >= timestamps.MS_ABOVE] /= 1000.0  # as timestamps.from_number
        return Chunk(ts, table[:, 1:], numbers, [])

    def _slow(self, lines: list[str], first_line: int, first_row: int) -> Chunk:
        """Row by row with the csv module: good rows kept, each bad one named."""
        ts: list[float] = []
        rows: list[list[float]] = []
        numbers: list[int] = []
        errors: list[str] = []
        for i, cells in enumerate(csv.reader(lines, delimiter=self._delimiter)):
            if not cells or cells == [""]:
                continue
            where = f"{self.path}:{first_line + i}"
            try:
                time_s = self._row_time(cells, first_row + i)
                values = [_cell(cells, c, self.header) for c in self._value_columns]
            except _CellError as bad:
                errors.append(f"{where}: {bad}")
                continue
            ts.append(time_s)
            rows.append(values)
            numbers.append(first_line + i)
        width = len(self._value_columns)
        table = np.array(rows, dtype=np.float64).reshape(len(rows), width)
        return Chunk(np.array(ts, dtype=np.float64), table, numbers, errors)

    def _row_time(self, cells: list[str], row: int) -> float:
        if self._ts_column is None:
            return row / self._rate_hz
        column = self._ts_column
        if column >= len(cells):
            raise _CellError(_missing(cells, column, self.header))
        try:
            return timestamps.from_text(cells[column])
        except ValueError as exc:
            raise _CellError(f"column {self.header[column]!r}: {exc}") from None


class _CellError(ValueError):
    """A cell that is missing or not a number (the message names the column)."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _missing(cells: list[str], column: int, header: list[str]) -> str:
    return f"column {header[column]!r}: missing (the row has {len(cells)} of {len(header)} columns)"


def _cell(cells: list[str], column: int, header: list[str]) -> float:
    if column >= len(cells):
        raise _CellError(_missing(cells, column, header))
    text = cells[column].strip()
    if not text:
        return math.nan  # this row does not carry this channel
    try:
        return float(text)
    except ValueError:
        raise _CellError(f"column {header[column]!r}: {text!r} is not a number") from None


class CsvSource:
    """A CSV recording replayed as readings, paced by ``speed``; see the module docstring."""

    def __init__(
        self,
        config: CsvSourceConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        with CsvFile.open(config) as table:
            self._channels = table.channels
        self.health = SourceHealth(f"csv {config.path.name}")
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def rate_hz(self) -> float | None:
        return self.config.rate_hz

    @property
    def units(self) -> dict[str, str]:
        return dict(self.config.units)

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        clock = _Pace(self.config.speed, self._monotonic(), self._monotonic, stop)
        shift: float | None = None
        offset = 0.0
        while not stop.is_set():
            first = last = math.nan
            rows = 0
            for ts, values in self._good_rows():
                if shift is None:
                    rebase = self.config.rebase or self.config.timestamp is None
                    shift = self._wall_clock() - float(ts[0]) if rebase else 0.0
                    clock.origin = float(ts[0]) + shift
                first = float(ts[0]) if math.isnan(first) else first
                last, rows = float(ts[-1]), rows + len(ts)
                for batch in clock.release(ts + shift + offset, values):
                    self.health.ok(len(batch))
                    yield batch
                if stop.is_set():
                    return
            if not self.config.loop or rows == 0:
                return
            step = (
                1 / self.config.rate_hz
                if self.config.rate_hz
                else (last - first) / max(rows - 1, 1)
            )
            offset += last - first + (step or 1.0)

    def _good_rows(self) -> Iterator[tuple[FloatArray, FloatArray]]:
        """The file's rows that parse and do not go back in time; the others counted."""
        previous = -math.inf
        with CsvFile.open(self.config) as table:
            for chunk in table.chunks():
                for error in chunk.errors:
                    self.health.bad_reading("unparseable", error)
                ts, values = chunk.ts, chunk.values
                backwards = _backwards(ts, previous)
                if len(backwards):
                    line = chunk.lines[int(backwards[0])]
                    for _ in backwards:
                        self.health.bad_reading("unsorted", f"{table.path}:{line}: time goes back")
                    keep = np.ones(len(ts), dtype=bool)
                    keep[backwards] = False
                    ts, values = ts[keep], values[keep]
                if len(ts):
                    previous = float(ts[-1])
                    yield ts, values


class _Pace:
    """Releases rows when their time has come: ``(ts - origin) / speed`` after the start."""

    def __init__(
        self, speed: float, start: float, monotonic: Callable[[], float], stop: threading.Event
    ) -> None:
        self.speed = speed
        self.start = start
        self.origin = 0.0
        self._monotonic = monotonic
        self._stop = stop

    def release(self, ts: FloatArray, values: FloatArray) -> Iterator[Readings]:
        if self.speed == 0:
            yield Readings(ts, values)
            return
        i = 0
        while i < len(ts):
            now = self.origin + (self._monotonic() - self.start) * self.speed
            due = int(np.searchsorted(ts, now, side="right"))
            if due > i:
                yield Readings(ts[i:due], values[i:due])
                i = due
                continue
            wait = (float(ts[i]) - now) / self.speed
            if self._stop.wait(max(wait, MIN_WAIT_S)):
                return


def build(config: CsvSourceConfig) -> CsvSource:
    """The registry's factory for ``type: csv``."""
    return CsvSource(config)
