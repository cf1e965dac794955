"""fit-normal: the graph computes what numpy computes, scores separate faults from normal,
and bad data is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.sources.machine_physics import MachineSpec, SimulatedMachine
from models.normal import (
    MIN_WINDOWS,
    ScorerKind,
    fit_normal,
    fit_scorer,
    fit_windows,
    run_onnx,
    to_onnx,
)
from models.window_features import WindowSpec, feature_names, features, windows_of
from shared.errors import ModelError

SPEC = MachineSpec()


def _machine_readings(windows: int, seed: int = 3) -> np.ndarray:
    machine = SimulatedMachine(SPEC, seed)
    return np.concatenate([machine.window(None, 1.0) for _ in range(windows)])[:, None]


def test_windows_follow_size_and_hop() -> None:
    values = np.arange(20, dtype=np.float64).reshape(10, 2)
    got = windows_of(values, WindowSpec(("a", "b"), size=4, hop=3))
    assert got.shape == (3, 2, 4)
    assert got[1, 0].tolist() == [6.0, 8.0, 10.0, 12.0]  # channel a, readings 3..6
    assert got[1, 1].tolist() == [7.0, 9.0, 11.0, 13.0]


def test_features_are_named_one_per_column() -> None:
    spec = WindowSpec(("x", "y", "z"), size=64, hop=32)
    rng = np.random.default_rng(0)
    feats = features(windows_of(rng.normal(size=(640, 3)), spec))
    assert feats.shape[1] == len(feature_names(spec))
    small = WindowSpec(("x",), size=8, hop=8)
    assert features(windows_of(rng.normal(size=(80, 1)), small)).shape[1] == len(
        feature_names(small)
    )


@pytest.mark.parametrize("kind", ["mahalanobis", "pca"])
def test_the_graph_scores_what_numpy_scores(kind: str) -> None:
    rng = np.random.default_rng(1)
    spec = WindowSpec(("a", "b"), size=128, hop=64)
    values = np.c_[np.sin(np.arange(20_000) / 5.0), rng.normal(size=20_000)]
    windows = windows_of(values + rng.normal(scale=0.1, size=values.shape), spec)
    scorer = fit_scorer(kind, features(windows))  # type: ignore[arg-type]
    model = to_onnx(scorer, spec, name="t", version="0.0.1")
    expected = scorer.scores(features(windows))
    np.testing.assert_allclose(run_onnx(model, windows), expected, rtol=2e-3, atol=2e-3)


def test_fit_normal_flags_machine_faults_and_stays_quiet_on_normal() -> None:
    spec = WindowSpec(("accel",), size=SPEC.window, hop=SPEC.window)
    result = fit_normal(_machine_readings(300), spec, name="spindle", version="1.0.0")
    assert result.kind in ("mahalanobis", "pca")
    assert {c.kind for c in result.candidates} == {"mahalanobis", "pca"}
    assert "chose" in result.reason
    assert "false alarms" in result.reason
    machine = SimulatedMachine(SPEC, 11)  # another machine of the same kind
    healthy = np.stack([machine.window(None, 1.0) for _ in range(100)])[:, None, :]
    assert np.mean(run_onnx(result.model, healthy) > result.threshold) <= 0.05
    for fault in ("imbalance", "misalignment", "bearing_outer_race", "impact"):
        faulty = np.stack([machine.window(fault, 1.0) for _ in range(30)])[:, None, :]
        assert np.mean(run_onnx(result.model, faulty) > result.threshold) >= 0.9, fault


def test_too_little_data_is_refused_with_what_is_needed() -> None:
    spec = WindowSpec(("a",), size=100, hop=100)
    with pytest.raises(ModelError, match=f"need at least {MIN_WINDOWS}"):
        fit_normal(np.zeros((1000, 1)), spec, name="t", version="1")


def test_non_finite_readings_are_refused() -> None:
    values = np.ones((10_000, 1))
    values[5, 0] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        fit_normal(values, WindowSpec(("a",), 50, 25), name="t", version="1")


def test_readings_must_match_the_channels() -> None:
    with pytest.raises(ModelError, match=r"\[N, 2\]"):
        windows_of(np.zeros((100, 3)), WindowSpec(("a", "b"), 10, 5))


def test_a_constant_channel_does_not_break_the_fit() -> None:
    rng = np.random.default_rng(2)
    values = np.c_[rng.normal(size=8000), np.full(8000, 4.0)]
    result = fit_normal(values, WindowSpec(("a", "flat"), 64, 32), name="t", version="1")
    assert np.isfinite(result.threshold)


@pytest.mark.parametrize("kind", ["mahalanobis", "pca"])
def test_a_given_threshold_is_the_calibrated_one_whichever_scorer_wins(kind: ScorerKind) -> None:
    """With ``threshold``, the graph's score is scaled so that its calibrated quantile is that
    threshold, for each scorer (a loop variable once overwrote it: Mahalanobis refits alarmed
    on every window)."""
    spec = WindowSpec(("x",), size=256, hop=256)
    windows = windows_of(_machine_readings(60), spec).astype(np.float32)
    for threshold in (0.05, 40.0):
        result = fit_windows(
            windows, spec, name="m", version="1", kinds=(kind,), threshold=threshold
        )
        assert result.threshold == pytest.approx(threshold)
        scores = run_onnx(result.model, windows)
        assert float(np.mean(scores > threshold)) <= 0.05
        assert float(np.median(scores)) > threshold / 10
