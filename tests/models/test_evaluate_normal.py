"""fit-normal on real labelled recordings, replayed through the edge's csv source and
sensor pipeline: the figures models/README.md reports hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.evaluate_normal import DATASETS, Recording, evaluate, segments


def test_segments_are_the_runs_of_label_one() -> None:
    assert segments(np.array([0, 1, 1, 0, 0, 1])) == [(1, 3), (5, 6)]
    assert segments(np.zeros(4)) == []


def test_a_real_wrist_sensor_finds_every_unusual_activity(tmp_path: Path) -> None:
    score = evaluate(DATASETS["basic-motions"](), tmp_path)
    assert score.recall == 1.0
    assert score.precision >= 0.85


def test_every_simulated_spindle_fault_is_an_incident(tmp_path: Path) -> None:
    score = evaluate(DATASETS["spindle"](), tmp_path)
    assert score.recall == 1.0
    assert score.precision == 1.0


def test_a_recording_with_no_anomaly_gives_no_incident(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(30_000) / 50.0
    values = np.c_[np.sin(2 * np.pi * t), 0.2 * rng.normal(size=t.size)]
    quiet = Recording(
        "quiet", ("a", "b"), 50.0, values[:20_000], values[20_000:] + 0.0,
        np.zeros(10_000), window=50, hop=25,
    )  # fmt: skip
    score = evaluate(quiet, tmp_path)
    assert score.incidents <= 1
