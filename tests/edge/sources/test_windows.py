"""The windowing stage: sizes and hops, channels, resampling, gaps, late readings."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.sources.readings import Readings, SourceHealth
from edge_agent.sources.windows import Window, WindowConfig, WindowedSource, Windower, WindowSample
from shared.errors import ConfigError

NAN = float("nan")


Column = Sequence[float] | np.ndarray[Any, Any]


def readings(ts: Column, *columns: Column) -> Readings:
    values = np.array(columns, dtype=np.float64).T.reshape(len(ts), len(columns))
    return Readings(np.array(ts, dtype=np.float64), values)


def ramp(n: int, start: float = 0.0) -> Readings:
    """``n`` readings one second apart whose value is their time."""
    ts = np.arange(n, dtype=np.float64) + start
    return readings(ts, ts)


def window(**keys: object) -> WindowConfig:
    return WindowConfig.model_validate(keys)


def firsts(windows: list[Window]) -> list[list[float]]:
    """Each window's single channel as a list."""
    return [w.data[0].tolist() for w in windows]


def test_windows_of_size_with_the_default_hop_do_not_overlap() -> None:
    windower = Windower(window(size=4), ["x"])
    out = windower.push(ramp(10))
    assert firsts(out) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [w.ts for w in out] == [3.0, 7.0]  # the time of the last reading
    assert out[0].data.dtype == np.float32
    assert out[0].data.shape == (1, 4)
    assert firsts(windower.push(ramp(2, start=10))) == [[8, 9, 10, 11]]


def test_a_hop_shorter_than_the_size_overlaps_windows() -> None:
    out = Windower(window(size=4, hop=2), ["x"]).push(ramp(10))
    assert firsts(out) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]


def test_a_hop_longer_than_the_size_skips_readings_even_across_batches() -> None:
    windower = Windower(window(size=2, hop=5), ["x"])
    out = windower.push(ramp(7))
    assert firsts(out) == [[0, 1], [5, 6]]
    # Readings 7, 8, 9 are skipped although they arrive one by one.
    out = [w for t in range(7, 13) for w in windower.push(ramp(1, start=t))]
    assert firsts(out) == [[10, 11]]


def test_channels_are_chosen_and_ordered_by_the_config() -> None:
    windower = Windower(window(size=2, channels=["c", "a"]), ["a", "b", "c"])
    out = windower.push(readings([0, 1], [1, 2], [10, 20], [100, 200]))
    assert windower.channels == ("c", "a")
    assert out[0].data.tolist() == [[100, 200], [1, 2]]


def test_a_channel_the_source_does_not_have_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"window\.channels: 'z' not among .*a, b"):
        Windower(window(size=2, channels=["a", "z"]), ["a", "b"])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"size": 0}, "size"),
        ({"size": 4, "hop": 0}, "hop"),
        ({"size": 4, "channels": ["a", "a"]}, "each channel may appear once"),
        ({"size": 4, "interpolation": "hold"}, "rate_hz"),
        ({"size": 4, "gaps": "fill"}, "gaps"),
        ({"size": 4, "sizes": 3}, "sizes"),
    ],
)
def test_a_bad_window_config_names_the_key(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WindowConfig.model_validate(keys)


def test_as_read_a_missing_channel_holds_its_last_value_and_waits_for_the_first() -> None:
    windower = Windower(window(size=3), ["a", "b"])
    # b is unknown at t=0 (that row is dropped), missing at t=2 (held at 10).
    out = windower.push(readings([0, 1, 2, 3], [1, 2, 3, 4], [NAN, 10, NAN, 30]))
    assert [w.data.tolist() for w in out] == [[[2, 3, 4], [10, 10, 30]]]


def test_rows_without_any_chosen_channel_are_ignored() -> None:
    windower = Windower(window(size=2, channels=["a"]), ["a", "b"])
    out = windower.push(readings([0, 1, 2], [1, NAN, 3], [7, 8, 9]))
    assert firsts(out) == [[1, 3]]


def test_late_readings_are_counted_and_dropped() -> None:
    windower = Windower(window(size=4), ["x"])
    out = windower.push(readings([0, 1, 0.5, 2, 3], [0, 1, 99, 2, 3]))
    assert firsts(out) == [[0, 1, 2, 3]]
    assert windower.late == 1
    assert windower.push(readings([2.5], [98])) == []
    assert windower.late == 2


def test_equal_timestamps_are_not_late() -> None:
    windower = Windower(window(size=3), ["x"])
    assert firsts(windower.push(readings([0, 1, 1], [0, 1, 2]))) == [[0, 1, 2]]
    assert windower.late == 0


def test_resampling_interpolates_linearly_on_a_fixed_grid() -> None:
    windower = Windower(window(size=7, rate_hz=2), ["x"])
    out = windower.push(readings([0, 1, 2, 3], [0, 10, 20, 30]))
    assert firsts(out) == [[0, 5, 10, 15, 20, 25, 30]]
    assert out[0].ts == 3.0


def test_resampling_with_hold_keeps_the_last_value() -> None:
    windower = Windower(window(size=7, rate_hz=2, interpolation="hold"), ["x"])
    out = windower.push(readings([0, 1, 2, 3], [0, 10, 20, 30]))
    assert firsts(out) == [[0, 0, 10, 10, 20, 20, 30]]


def test_resampling_an_uneven_stream_gives_evenly_spaced_columns() -> None:
    windower = Windower(window(size=5, rate_hz=1), ["x"])
    out = windower.push(readings([10.0, 10.3, 11.9, 14.0], [0, 3, 19, 40]))
    assert np.allclose(out[0].data[0], [0, 10, 20, 30, 40])
    assert out[0].ts == 14.0


def test_resampling_starts_when_every_channel_has_a_value_and_holds_a_silent_one() -> None:
    # b reports on change only: once at t=1.5, then nothing.
    windower = Windower(window(size=3, rate_hz=1), ["a", "b"])
    out = windower.push(
        readings([0, 1, 1.5, 2, 3, 4], [0, 1, NAN, 2, 3, 4], [NAN] * 2 + [7] + [NAN] * 3)
    )
    assert len(out) == 1
    assert np.allclose(out[0].data, np.array([[1.5, 2.5, 3.5], [7, 7, 7]]))


def test_resampling_continues_the_grid_across_batches() -> None:
    windower = Windower(window(size=4, rate_hz=4), ["x"])
    out = windower.push(readings([0, 0.5], [0, 2])) + windower.push(readings([1.0], [4]))
    assert np.allclose(firsts(out), [[0, 1, 2, 3]])
    assert np.allclose(firsts(windower.push(readings([2.0], [8]))), [[4, 5, 6, 7]])


def gapped(ts_parts: Sequence[range]) -> Readings:
    ts = [float(t) for part in ts_parts for t in part]
    return readings(ts, ts)


def test_a_gap_drops_the_window_that_would_span_it() -> None:
    windower = Windower(window(size=4, max_gap_s=2.5), ["x"])
    out = windower.push(gapped([range(10), range(20, 30)]))
    assert firsts(out) == [[0, 1, 2, 3], [4, 5, 6, 7], [20, 21, 22, 23], [24, 25, 26, 27]]
    assert windower.gaps == 1
    assert not any(w.gap for w in out)


def test_a_gap_marks_the_window_that_spans_it() -> None:
    windower = Windower(window(size=4, max_gap_s=2.5, gaps="mark"), ["x"])
    out = windower.push(gapped([range(10), range(20, 30)]))
    assert firsts(out) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 20, 21],
        [22, 23, 24, 25],
        [26, 27, 28, 29],
    ]
    assert [w.gap for w in out] == [False, False, True, False, False]
    assert windower.marked == 1


def test_a_gap_at_a_window_boundary_marks_nothing() -> None:
    windower = Windower(window(size=4, max_gap_s=2.5, gaps="mark"), ["x"])
    out = windower.push(gapped([range(8), range(20, 24)]))
    assert [w.gap for w in out] == [False, False, False]
    assert windower.gaps == 1


def test_a_gap_between_batches_is_detected_too() -> None:
    windower = Windower(window(size=4, max_gap_s=2.5), ["x"])
    out = windower.push(ramp(6)) + windower.push(ramp(6, start=100))
    assert firsts(out) == [[0, 1, 2, 3], [100, 101, 102, 103]]
    assert windower.gaps == 1


def test_resampling_never_interpolates_across_a_gap() -> None:
    windower = Windower(window(size=3, rate_hz=1, max_gap_s=5), ["x"])
    out = windower.push(readings([0, 1, 2, 3, 100, 101, 102], [0, 1, 2, 3, 50, 51, 52]))
    assert firsts(out) == [[0, 1, 2], [50, 51, 52]]


def test_a_silent_channel_must_be_read_again_after_a_gap() -> None:
    windower = Windower(window(size=2, max_gap_s=5), ["a", "b"])
    out = windower.push(readings([0, 1, 50, 51, 52], [0, 1, 2, 3, 4], [9, NAN, NAN, 8, NAN]))
    # Before the gap b holds 9; after it b is unknown until t=51.
    assert [w.data.tolist() for w in out] == [[[0, 1], [9, 9]], [[3, 4], [8, 8]]]


def split(batch: Readings, cuts: list[int]) -> Iterator[Readings]:
    bounds = [0, *sorted({c % (len(batch) + 1) for c in cuts}), len(batch)]
    for start, stop in itertools.pairwise(bounds):
        if stop > start:
            yield Readings(batch.ts[start:stop], batch.values[start:stop])


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 6),
    hop=st.integers(1, 8),
    rate=st.sampled_from([None, 0.5, 1.0, 3.0]),
    steps=st.lists(st.sampled_from([0.25, 0.5, 1.0, 1.5, 7.0]), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_windows_do_not_depend_on_how_readings_are_batched(
    size: int, hop: int, rate: float | None, steps: list[float], cuts: list[int]
) -> None:
    config = window(size=size, hop=hop, rate_hz=rate, max_gap_s=5, gaps="mark")
    ts = np.cumsum(steps)
    batch = readings(ts, np.sin(ts), np.cos(ts))
    whole = Windower(config, ["a", "b"]).push(batch)
    windower = Windower(config, ["a", "b"])
    pieces = [w for part in split(batch, cuts) for w in windower.push(part)]
    assert [(w.ts, w.gap) for w in pieces] == [(w.ts, w.gap) for w in whole]
    for mine, theirs in zip(pieces, whole, strict=True):
        assert np.allclose(mine.data, theirs.data)
    for w in whole:
        assert w.data.shape == (2, size)


class ListSource:
    """A reading source over fixed batches (the windowing stage is pure: no I/O needed)."""

    def __init__(self, batches: list[Readings], rate_hz: float | None) -> None:
        self._batches = batches
        self.rate_hz = rate_hz
        self.channels = ("x",)
        self.health = SourceHealth("list")

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        yield from self._batches


def test_a_windowed_source_is_a_source_of_numbered_samples() -> None:
    source = WindowedSource(ListSource([ramp(5), ramp(5, start=5)], rate_hz=1.0), window(size=4))
    samples = list(source.samples(threading.Event()))
    assert [s.seq for s in samples] == [0, 1]
    assert [s.ts for s in samples] == [3.0, 7.0]
    assert all(isinstance(s, WindowSample) and not s.gap for s in samples)
    assert source.window == 4
    assert source.period_s == 4.0
    assert source.channels == ("x",)


def test_a_windowed_source_takes_its_period_from_the_resampling_rate() -> None:
    source = WindowedSource(ListSource([], rate_hz=None), window(size=8, hop=2, rate_hz=4))
    assert source.period_s == 0.5


def test_a_source_without_a_rate_needs_a_resampling_rate() -> None:
    with pytest.raises(ConfigError, match=r"window\.rate_hz"):
        WindowedSource(ListSource([], rate_hz=None), window(size=8))
