"""The trainers' pure functions: data they cannot use is refused with the reason, and the
figures they measure are what the model did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.sources.machine_physics import LABELS, MachineSpec, SimulatedMachine
from models import normal_refit, vibration_retrain
from shared.errors import ModelError

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "vibration-anomaly-1.0.0.onnx"


def test_retrain_refuses_data_it_cannot_use() -> None:
    machine = SimulatedMachine(MachineSpec(), seed=1)
    windows = np.stack([machine.window(None) for _ in range(3)])
    with pytest.raises(ModelError, match="one label only"):
        vibration_retrain.retrain(windows, np.zeros(3, dtype=np.int64), base_per_machine=1)
    with pytest.raises(ModelError, match=r"the classifier reads \[N, 2048\]"):
        vibration_retrain.retrain(windows[:, :100], np.zeros(3, dtype=np.int64))
    broken = windows.copy()
    broken[0, 0] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        vibration_retrain.retrain(broken, np.asarray([0, 1, 1]), base_per_machine=1)
    with pytest.raises(ModelError, match="'looseness'"):
        vibration_retrain.label_indices(["healthy", "looseness"])


def test_evaluate_counts_false_alarms_and_missed_faults() -> None:
    machine = SimulatedMachine(MachineSpec(), seed=2)
    windows = np.stack([machine.window(None) for _ in range(10)] + [machine.window("impact")] * 4)
    labels = np.asarray([0] * 10 + [LABELS.index("impact")] * 4)
    quality = vibration_retrain.evaluate(SHIPPED.read_bytes(), windows, labels)
    assert (quality.windows, quality.normal, quality.faults) == (14, 10, 4)
    assert quality.false_alarm_rate == 0.0
    assert quality.recall == 1.0
    # Told that the faults are normal, the same answers are all false alarms.
    wrong = vibration_retrain.evaluate(SHIPPED.read_bytes(), windows, np.zeros(14, np.int64))
    assert wrong.false_alarm_rate == round(4 / 14, 4)
    assert wrong.recall is None
    assert vibration_retrain.evaluate(SHIPPED.read_bytes(), windows[:0], labels[:0]).windows == 0


def test_refit_keeps_the_threshold_it_is_given() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(64)
    normal = np.stack(
        [np.stack([np.sin(0.3 * t + p), np.cos(0.3 * t + p)]) for p in rng.uniform(0, 6, 200)]
    ).astype(np.float32) + rng.normal(0, 0.05, (200, 2, 64)).astype(np.float32)
    faults = normal[:20] + rng.normal(0, 1.0, (20, 2, 64)).astype(np.float32)
    for threshold in (0.7, 7.0):
        model = normal_refit.refit(normal, np.zeros(200, np.int64), threshold=threshold)
        windows = np.concatenate([normal, faults])
        labels = np.asarray([0] * 200 + [1] * 20)
        quality = normal_refit.evaluate(model, windows, labels, threshold=threshold)
        assert quality.false_alarm_rate is not None
        assert quality.false_alarm_rate <= 0.05
        assert quality.recall == 1.0
    with pytest.raises(ModelError, match="too few"):
        normal_refit.refit(normal[:30], np.zeros(30, np.int64), threshold=1.0)
    with pytest.raises(ModelError, match=r"\[N, channels, size\]"):
        normal_refit.refit(normal[:, 0], np.zeros(200, np.int64), threshold=1.0)
