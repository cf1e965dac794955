"""The csv source: timestamps or a rate, gzip, pacing, loops, and bad files named precisely."""

from __future__ import annotations

import gzip
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.sources import csv as csv_source
from edge_agent.sources.csv import CsvSource, CsvSourceConfig
from edge_agent.sources.readings import Readings
from edge_agent.sources.windows import WindowConfig, WindowedSource
from shared.errors import ConfigError


def config(path: Path, **keys: object) -> CsvSourceConfig:
    keys.setdefault("timestamp", "time")
    keys.setdefault("speed", 0)
    return CsvSourceConfig.model_validate({"type": "csv", "path": path, **keys})


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def replay(source: CsvSource, stop: threading.Event | None = None) -> Readings:
    batches = list(source.readings(stop or threading.Event()))
    return Readings(
        np.concatenate([b.ts for b in batches]), np.concatenate([b.values for b in batches])
    )


SIMPLE = "time,temp,pressure\n100.0,20.5,1.0\n100.5,20.7,1.1\n101.0,21.0,1.2\n"


def test_a_file_with_epoch_timestamps_replays_its_rows(tmp_path: Path) -> None:
    source = CsvSource(config(write(tmp_path, SIMPLE)))
    assert source.channels == ("temp", "pressure")  # every column but the time
    out = replay(source)
    assert out.ts.tolist() == [100.0, 100.5, 101.0]
    assert out.values.tolist() == [[20.5, 1.0], [20.7, 1.1], [21.0, 1.2]]
    assert source.health.readings == 3


def test_channels_and_units_come_from_the_config(tmp_path: Path) -> None:
    keys = {"channels": ["pressure"], "units": {"pressure": "bar"}}
    source = CsvSource(config(write(tmp_path, SIMPLE), **keys))
    assert source.channels == ("pressure",)
    assert source.units == {"pressure": "bar"}
    assert replay(source).values.tolist() == [[1.0], [1.1], [1.2]]


def test_iso_timestamps_are_read_and_a_time_without_a_zone_is_utc(tmp_path: Path) -> None:
    text = "time,x\n2026-11-22T10:00:00Z,1\n2026-11-22T11:00:01+01:00,2\n2026-11-22 10:00:02.5,3\n"
    out = replay(CsvSource(config(write(tmp_path, text))))
    start = 1795341600.0  # 2026-11-22T10:00:00Z
    assert out.ts.tolist() == [start, start + 1, start + 2.5]


def test_a_fixed_rate_times_rows_from_the_start_of_the_replay(tmp_path: Path) -> None:
    path = write(tmp_path, "x\n1\n2\n3\n")
    source = CsvSource(config(path, timestamp=None, rate_hz=4), wall_clock=lambda: 1000.0)
    out = replay(source)
    assert out.ts.tolist() == [1000.0, 1000.25, 1000.5]
    assert source.rate_hz == 4


def test_rebase_moves_the_recording_to_now(tmp_path: Path) -> None:
    source = CsvSource(config(write(tmp_path, SIMPLE), rebase=True), wall_clock=lambda: 5000.0)
    assert replay(source).ts.tolist() == [5000.0, 5000.5, 5001.0]


def test_a_gzip_file_is_read_like_a_plain_one(tmp_path: Path) -> None:
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(SIMPLE.encode()))
    assert replay(CsvSource(config(path))).ts.tolist() == [100.0, 100.5, 101.0]


def test_an_empty_cell_is_a_reading_that_row_lacks(tmp_path: Path) -> None:
    text = "time,a,b\n1,1.5,\n2,,7\n"
    out = replay(CsvSource(config(write(tmp_path, text))))
    assert np.array_equal(out.values, [[1.5, math.nan], [math.nan, 7]], equal_nan=True)


def test_quoted_cells_and_another_delimiter(tmp_path: Path) -> None:
    text = 'time;"a"\n1;"2.5"\n2;3\n'
    out = replay(CsvSource(config(write(tmp_path, text), delimiter=";")))
    assert out.values.tolist() == [[2.5], [3.0]]


def test_loop_replays_again_with_times_running_on(tmp_path: Path) -> None:
    source = CsvSource(config(write(tmp_path, "time,x\n10,1\n11,2\n12,3\n"), loop=True))
    stop = threading.Event()
    seen: list[float] = []
    for batch in source.readings(stop):
        seen += batch.ts.tolist()
        if len(seen) >= 7:
            stop.set()
    assert seen[:7] == [10, 11, 12, 13, 14, 15, 16]


def test_a_paced_replay_releases_rows_as_their_time_comes(tmp_path: Path) -> None:
    rows = "".join(f"{t},{t}\n" for t in range(10))
    # Each look at the clock: half a second of the file on, at 1000 times real time.
    ticks = iter(np.arange(0, 1, 0.0005).tolist())
    source = CsvSource(
        config(write(tmp_path, "time,x\n" + rows), speed=1000), monotonic=lambda: next(ticks)
    )
    batches = list(source.readings(threading.Event()))
    assert len(batches) > 3  # not all at once
    assert np.concatenate([b.ts for b in batches]).tolist() == list(range(10))


def test_a_stop_ends_a_paced_replay(tmp_path: Path) -> None:
    source = CsvSource(config(write(tmp_path, "time,x\n0,1\n3600,2\n"), speed=1))
    stop = threading.Event()
    out: Iterator[Readings] = source.readings(stop)
    assert next(out).ts.tolist() == [0.0]
    stop.set()
    assert list(out) == []


def test_a_large_file_is_read_in_chunks_with_the_right_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_source, "CHUNK_BYTES", 1000)
    n = 2000
    lines = [f"{t},{t * 2}\n" for t in range(n)]
    lines[1500] = "x,1\n"  # a bad time well past the first chunks
    path = write(tmp_path, "t,v\n" + "".join(lines))
    with pytest.raises(ConfigError, match=r"data\.csv:1502: column 't'"):
        config(path, timestamp="t").check()
    source = CsvSource(config(path, timestamp="t"))
    out = replay(source)
    assert len(out) == n - 1
    assert out.values[-1, 0] == 2 * (n - 1)
    assert source.health.bad["unparseable"] == 1


@pytest.mark.parametrize(
    ("text", "keys", "message"),
    [
        (
            SIMPLE,
            {"channels": ["temp", "humidity"]},
            r"channels: .*data\.csv:1: no column 'humidity'",
        ),
        (SIMPLE, {"timestamp": "ts"}, r"timestamp: .*data\.csv:1: no column 'ts'"),
        ("time,x\n1,2\n2,abc\n", {}, r"path: .*data\.csv:3: column 'x': 'abc' is not a number"),
        ("time,x,y\n1,2,3\n2,4\n", {}, r"data\.csv:3: column 'y': missing \(the row has 2 of 3"),
        ("time,x\n1,2\n3,4\n2,5\n", {}, r"data\.csv:4: column 'time': timestamps must not go back"),
        ("time,x\n1,2\nyesterday,4\n", {}, r"data\.csv:3: column 'time': 'yesterday' is not epoch"),
        ("", {}, r"data\.csv:1: the file is empty"),
    ],
)
def test_check_names_the_key_the_file_the_line_and_the_column(
    tmp_path: Path, text: str, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(write(tmp_path, text), **keys).check()


def test_check_passes_a_good_file_and_blank_lines(tmp_path: Path) -> None:
    config(write(tmp_path, SIMPLE + "\n102,1,2\n")).check()


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"path: cannot read .*nope\.csv"):
        config(tmp_path / "nope.csv").check()


def test_at_run_time_bad_rows_are_counted_and_skipped(tmp_path: Path) -> None:
    text = "time,x\n1,1\n2,oops\n3,3\n2.5,9\n\n4,4\n"
    source = CsvSource(config(write(tmp_path, text)))
    out = replay(source)
    assert out.ts.tolist() == [1, 3, 4]
    assert source.health.snapshot() == {
        "readings": 3, "gaps": 0, "missed": 0, "bad_unparseable": 1, "bad_unsorted": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rate_hz": 10}, "exactly one of timestamp"),
        ({"timestamp": None}, "exactly one of timestamp"),
        ({"channels": ["a", "a"]}, "each column may appear once"),
        ({"channels": ["time"]}, "'time' is the timestamp column"),
        ({"channels": ["a"], "units": {"b": "V"}}, "units: b not among the channels"),
        ({"speed": -1}, "speed"),
        ({"sped": 2}, "sped"),
    ],
)
def test_bad_keys_are_refused_by_name(
    tmp_path: Path, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        config(tmp_path / "x.csv", **keys)


def test_a_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    loaded = CsvSourceConfig.model_validate(
        {"type": "csv", "path": "data.csv", "rate_hz": 1}, context={"base_dir": tmp_path}
    )
    assert loaded.path == tmp_path / "data.csv"


def test_the_csv_source_feeds_the_windowing_stage(tmp_path: Path) -> None:
    rows = "".join(f"{t / 100},{math.sin(t)},{math.cos(t)}\n" for t in range(1000))
    source = CsvSource(config(write(tmp_path, "time,a,b\n" + rows)))
    windowed = WindowedSource(
        source, WindowConfig(size=100, hop=50, rate_hz=100, channels=["b", "a"])
    )
    samples = list(windowed.samples(threading.Event()))
    assert len(samples) == 19
    assert samples[0].data.shape == (2, 100)
    assert samples[0].data[0, 0] == pytest.approx(1.0)  # cos(0): b first
    assert samples[-1].ts == pytest.approx(9.99)
