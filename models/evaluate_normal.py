"""How well ``fit-normal`` finds what is not normal, on real labelled sensor data, measured
the way a gateway runs it: ``python -m models.evaluate_normal``.

For each data set: the normal part is written to a CSV and learnt with ``fit-normal``'s
own code (read by the edge's CSV reader); then the whole labelled recording is written to
a CSV and replayed through the edge's ``csv`` source, its windowing stage and
``SensorPipeline`` with the default filters (the calibrated threshold, debounced 3 of 4).
Each incident (a ``start`` to its ``end``) is compared with the labelled anomalous segments:
precision is the share of incidents that overlap a labelled segment, recall the share of
labelled segments that at least one incident overlaps.

Data sets (all ship inside pip packages, nothing is downloaded):

- ``basic-motions``: sktime's BasicMotions, a wrist-worn 3-axis accelerometer and 3-axis
  gyroscope at 10 Hz. Normal is standing and walking (the training recordings); the replay
  is the 40 test recordings in a fixed shuffled order, running and badminton anomalous.
- ``ecg``: sktime's MIT-BIH excerpt (360 Hz, one lead), one labelled anomalous stretch;
  normal is everything before it, minus a margin.
- ``spindle``: the simulated machine (``machine_physics``), healthy for training, then a
  replay with each fault kind once among healthy stretches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_agent.inference.config import ModelConfig, RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import SensorPipeline
from edge_agent.sources.csv import CsvSourceConfig
from models.normal import F64, fit_normal
from models.normal_files import read_normal_csv, write_model
from models.window_features import WindowSpec


@dataclass(frozen=True, slots=True)
class Recording:
    """A labelled recording: readings ``[N, C]`` at ``rate_hz``, label 1 = anomalous."""

    name: str
    channels: tuple[str, ...]
    rate_hz: float
    normal: F64
    replay: F64
    labels: np.ndarray
    window: int
    hop: int


@dataclass(frozen=True, slots=True)
class Score:
    """Event-level figures of one data set."""

    dataset: str
    scorer: str
    threshold: float
    incidents: int
    true_incidents: int
    segments: int
    segments_found: int
    precision: float
    recall: float
    false_alarm_rate: float
    latency_ms: float


def write_csv(path: Path, channels: tuple[str, ...], values: F64, rate_hz: float) -> None:
    """A CSV with a time column (seconds) and one column per channel."""
    t = np.arange(len(values)) / rate_hz
    header = ",".join(("t", *channels))
    np.savetxt(
        path, np.column_stack([t, values]), delimiter=",", header=header, comments="", fmt="%.6g"
    )


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of the runs of label 1."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def incidents(pipeline: SensorPipeline) -> list[tuple[float, float]]:
    """Replay the pipeline's source to its end; ``(start_ts, end_ts)`` of every incident."""
    opened: dict[str, float] = {}
    found: list[tuple[float, float]] = []
    events = []
    for sample in pipeline.source.samples(threading.Event()):
        events += pipeline.process_sample(sample)
    events += pipeline.close()
    for event in events:
        ts = event.ts.timestamp()
        if event.state == "start":
            opened[event.label] = ts
        elif event.state == "end" and event.label in opened:
            found.append((opened.pop(event.label), ts))
    return found


def evaluate(recording: Recording, workdir: Path) -> Score:
    """Fit on the normal part, replay the whole recording through the edge, score incidents."""
    rate, channels = recording.rate_hz, recording.channels
    write_csv(workdir / "normal.csv", channels, recording.normal, rate)
    csv = CsvSourceConfig(type="csv", path=workdir / "normal.csv", timestamp="t")
    columns, values, _ = read_normal_csv(csv)
    spec = WindowSpec(columns, size=recording.window, hop=recording.hop, rate_hz=rate)
    result = fit_normal(values, spec, name=recording.name, version="eval")
    write_model(result, workdir / "models")
    write_csv(workdir / "replay.csv", channels, recording.replay, rate)
    config = PipelineConfig.model_validate(
        {
            "name": recording.name,
            "source": {"type": "csv", "path": workdir / "replay.csv", "timestamp": "t", "speed": 0},
            "window": {"size": recording.window, "hop": recording.hop, "rate_hz": rate},
            "model": {"name": recording.name, "manifest": workdir / "models" / "manifest.json"},
        }
    )
    slot = load_slot(
        ModelConfig(name=recording.name, manifest=workdir / "models" / "manifest.json"),
        RuntimeConfig(),
    )
    found = incidents(SensorPipeline(config, slot))
    truth = [(a / rate, b / rate) for a, b in segments(recording.labels)]
    overlapping = [any(s < te and ts < e for ts, te in truth) for s, e in found]
    hit = [any(s < te and ts < e for s, e in found) for ts, te in truth]
    return Score(
        dataset=recording.name,
        scorer=result.kind,
        threshold=round(result.threshold, 4),
        incidents=len(found),
        true_incidents=sum(overlapping),
        segments=len(truth),
        segments_found=sum(hit),
        precision=round(sum(overlapping) / max(len(found), 1), 3),
        recall=round(sum(hit) / max(len(truth), 1), 3),
        false_alarm_rate=round(result.false_alarm_rate, 4),
        latency_ms=round(result.latency_ms, 3),
    )


def basic_motions() -> Recording:
    from sktime.datasets import load_basic_motions

    x_train, y_train = load_basic_motions(split="train", return_type="numpy3D")
    x_test, y_test = load_basic_motions(split="test", return_type="numpy3D")
    normal_kinds = {"standing", "walking"}
    normal = np.concatenate(
        [x.T for x, y in zip(x_train, y_train, strict=True) if y in normal_kinds]
    )
    order = np.random.default_rng(0).permutation(len(x_test))
    replay = np.concatenate([x_test[i].T for i in order])
    labels = np.concatenate(
        [np.full(x_test[i].shape[1], y_test[i] not in normal_kinds) for i in order]
    )
    channels = tuple(f"{sensor}_{axis}" for sensor in ("acc", "gyro") for axis in "xyz")
    return Recording("basic-motions", channels, 10.0, normal, replay, labels, window=20, hop=5)


def ecg() -> Recording:
    import sktime.datasets

    path = Path(sktime.datasets.__file__).parent / "data" / "mitdb" / "mitdb.csv"
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    values, labels = data[:, :1], data[:, 1]
    first = segments(labels)[0][0]
    return Recording(
        "ecg", ("lead",), 360.0, values[: first - 360], values, labels, window=180, hop=45
    )


def spindle() -> Recording:
    from edge_agent.sources.machine_physics import FAULTS, MachineSpec, SimulatedMachine

    spec = MachineSpec()
    machine = SimulatedMachine(spec, 21)
    normal = np.concatenate([machine.window(None, 1.0) for _ in range(300)])[:, None]
    parts, labels = [], []
    for fault in FAULTS:
        for kind, count in ((None, 12), (fault, 6)):
            block = np.concatenate([machine.window(kind, 1.0) for _ in range(count)])
            parts.append(block)
            labels.append(np.full(len(block), kind is not None))
    replay = np.concatenate(parts)[:, None]
    return Recording(
        "spindle", ("accel",), spec.sample_rate_hz, normal.astype(np.float64),
        replay.astype(np.float64), np.concatenate(labels), window=spec.window, hop=spec.window,
    )  # fmt: skip


DATASETS: dict[str, Callable[[], Recording]] = {
    "basic-motions": basic_motions,
    "ecg": ecg,
    "spindle": spindle,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(DATASETS), action="append")
    args = parser.parse_args()
    for name in args.only or DATASETS:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asdict(evaluate(DATASETS[name](), Path(tmp)))))


if __name__ == "__main__":
    main()
