"""Learn one machine's normal from readings of normal operation: data in, ONNX scorer out.

A pure function from data to ONNX bytes and figures (``fit_normal``), used by
``aiot models fit-normal`` on a gateway and, later, by the cloud's training. The model is
one ONNX graph from a raw window ``[batch, channels, size]`` to an anomaly ``score``
``[batch]``, so the edge runs exactly what was validated here:

- features per channel, computed inside the graph (:mod:`models.window_features`);
- features standardised with the training set's mean and spread;
- a scorer: the Mahalanobis distance with a Ledoit-Wolf shrunk covariance, or the residual
  of a PCA reconstruction (the part of a window the normal subspace cannot explain). Both
  are scaled per feature (divided by sqrt(F)) so a score near 1 is typical of normal data.

How the scorer is chosen: normal windows are split in time order into 60 % training,
20 % calibration and 20 % check. Each candidate is fitted on the training part, its
threshold calibrated at the ``1 - false_alarm_rate`` quantile of the calibration scores,
and the candidate with the lower false-alarm rate on the unseen check part wins (ties go
to the faster one). That is the question a gateway needs answered: which model stays
quiet on normal data it has not seen. The winner's threshold is then recalibrated on
calibration and check together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from sklearn.covariance import LedoitWolf

from models.graph import GraphBuilder
from models.manifest import ModelCard, NormalFit, TensorSpec
from models.window_features import WindowSpec, feature_names, features, front_end, windows_of
from shared.errors import ModelError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
ScorerKind = Literal["mahalanobis", "pca"]

EPS = 1e-6
MAX_TRAINING_WINDOWS = 20_000
MIN_WINDOWS = 40
"""Fewer normal windows than this cannot be split into train, calibration and check."""
PCA_VARIANCE = 0.95
SCALE_FLOOR = 1e-3
"""A feature that never moves in normal data still gets this spread (no division by 0)."""


@dataclass(frozen=True, slots=True)
class Scorer:
    """Standardisation plus one scorer, as numbers the graph and numpy both use."""

    kind: ScorerKind
    mean: F64
    scale: F64
    matrix: F64
    """Mahalanobis: the precision's Cholesky factor L (d^2 = |z L|^2). PCA: the components."""
    detail: str

    def scores(self, feats: F64) -> F64:
        """Anomaly scores of ``[B, F]`` features (numpy reference of the graph's scorer)."""
        z = (feats - self.mean) / self.scale
        width = np.sqrt(z.shape[1])
        if self.kind == "mahalanobis":
            return np.asarray(np.linalg.norm(z @ self.matrix, axis=1) / width)
        residual = z - (z @ self.matrix.T) @ self.matrix
        return np.asarray(np.linalg.norm(residual, axis=1) / width)


def fit_scorer(kind: ScorerKind, feats: F64) -> Scorer:
    """Fit one candidate on normal features ``[B, F]``."""
    mean = feats.mean(axis=0)
    scale = np.maximum(feats.std(axis=0), SCALE_FLOOR)
    z = (feats - mean) / scale
    if kind == "mahalanobis":
        shrunk = LedoitWolf().fit(z)
        precision = np.linalg.inv(shrunk.covariance_)
        factor = np.linalg.cholesky((precision + precision.T) / 2.0).astype(np.float64)
        detail = f"Ledoit-Wolf shrinkage {shrunk.shrinkage_:.3f}"
        return Scorer("mahalanobis", mean, scale, factor, detail)
    _, singular, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    explained = np.cumsum(singular**2) / max(float(np.sum(singular**2)), EPS)
    keep = int(np.searchsorted(explained, PCA_VARIANCE) + 1)
    keep = min(keep, max(1, feats.shape[1] - 1))
    detail = f"{keep} of {feats.shape[1]} components ({PCA_VARIANCE:.0%} of the variance)"
    return Scorer("pca", mean, scale, vt[:keep], detail)


def _scorer_graph(g: GraphBuilder, feats: str, scorer: Scorer) -> str:
    """Graph of :meth:`Scorer.scores`: ``[B, F]`` -> ``[B]``."""
    z = g.op(
        "Div",
        g.op("Sub", feats, g.const("feature_mean", scorer.mean)),
        g.const("feature_scale", scorer.scale),
    )
    if scorer.kind == "mahalanobis":
        out = g.op("MatMul", z, g.const("precision_factor", scorer.matrix))
    else:
        components = g.const("components", scorer.matrix)
        projected = g.op("MatMul", g.op("MatMul", z, g.op("Transpose", components)), components)
        out = g.op("Sub", z, projected)
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", out, out), g.axes(1), keepdims=0))
    return g.op("Div", norm, g.const("width", np.sqrt(scorer.mean.size)))


def to_onnx(
    scorer: Scorer, spec: WindowSpec, *, name: str, version: str, gain: float = 1.0
) -> bytes:
    """The whole scorer as one ONNX graph: raw window ``[B, C, W]`` -> ``score`` ``[B]``
    (times ``gain``)."""
    g = GraphBuilder(name.replace("-", "_"))
    scores = _scorer_graph(g, front_end(g, "window", spec.size), scorer)
    if gain != 1.0:
        scores = g.op("Mul", scores, g.const("gain", np.float32(gain)))
    score = g.rename(scores, "score")
    model: onnx.ModelProto = g.model(
        inputs=[("window", ["batch", len(spec.channels), spec.size])],
        outputs=[(score, ["batch"])],
        doc=(
            f"{name} {version}: windows of {spec.size} readings of {', '.join(spec.channels)} "
            f"-> anomaly score ({scorer.kind}; about 1 on normal data)"
        ),
        producer_version=version,
    )
    data: bytes = model.SerializeToString()
    return data


@dataclass(frozen=True, slots=True)
class Candidate:
    """One scorer's figures on the normal data it was not fitted on."""

    kind: ScorerKind
    threshold: float
    check_false_alarm_rate: float
    latency_ms: float
    detail: str


@dataclass(frozen=True, slots=True)
class FitResult:
    """What ``fit_normal`` learned: the model, its threshold and how it was chosen."""

    name: str
    version: str
    model: bytes
    spec: WindowSpec
    kind: ScorerKind
    threshold: float
    features: list[str]
    windows: int
    false_alarm_rate: float
    """The check part's false-alarm rate of the chosen scorer (unseen normal windows)."""
    latency_ms: float
    """ONNX Runtime on one thread, per window."""
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """Why this scorer, in one sentence with the numbers."""
        figures = "; ".join(
            f"{c.kind}: {c.check_false_alarm_rate:.2%} false alarms on unseen normal windows, "
            f"{c.latency_ms:.3f} ms per window ({c.detail})"
            for c in self.candidates
        )
        return f"chose {self.kind} — {figures}"


def training_hop(spec: WindowSpec, readings: int) -> int:
    """The hop of the windows a fit learns from: a quarter window or less, so windows start
    at every phase of a machine's cycle (a live stream starts wherever it starts), and no
    more than MAX_TRAINING_WINDOWS of them."""
    hop = max(1, min(spec.hop, spec.size // 4))
    return max(hop, (readings - spec.size) // MAX_TRAINING_WINDOWS + 1)


def fit_normal(
    values: F64,
    spec: WindowSpec,
    *,
    name: str,
    version: str,
    false_alarm_rate: float = 0.005,
    kinds: Sequence[ScorerKind] = ("mahalanobis", "pca"),
) -> FitResult:
    """Learn normal from ``[N, C]`` readings of normal operation; see the module docstring."""
    if not np.all(np.isfinite(values)):
        raise ModelError("normal readings hold NaN or infinite values; clean or drop them first")
    dense = replace(spec, hop=training_hop(spec, len(values)))
    windows = windows_of(values, dense)
    if windows.shape[0] < MIN_WINDOWS:
        raise ModelError(
            f"{windows.shape[0]} windows of {spec.size} readings (hop {dense.hop}) are too few "
            f"to learn normal: need at least {MIN_WINDOWS}; give more data"
        )
    return fit_windows(
        windows, spec, name=name, version=version, false_alarm_rate=false_alarm_rate, kinds=kinds
    )


def fit_windows(
    windows: F32,
    spec: WindowSpec,
    *,
    name: str,
    version: str,
    false_alarm_rate: float = 0.005,
    kinds: Sequence[ScorerKind] = ("mahalanobis", "pca"),
    threshold: float | None = None,
) -> FitResult:
    """Learn normal from normal windows ``[B, C, W]`` in time order (``fit_normal`` cuts them
    from readings; the cloud's training has them from a machine's samples). With
    ``threshold``, the graph's score is scaled so that its calibrated threshold is that one:
    a refit keeps the threshold its pipeline is set to."""
    if not 0 < false_alarm_rate < 0.5:
        raise ModelError(f"false_alarm_rate must be in (0, 0.5), not {false_alarm_rate}")
    if windows.shape[0] < MIN_WINDOWS:
        raise ModelError(
            f"{windows.shape[0]} normal windows are too few to learn normal: need at least "
            f"{MIN_WINDOWS}"
        )
    feats = features(windows)
    train, calibrate, check = np.split(feats, [int(0.6 * len(feats)), int(0.8 * len(feats))])
    quantile = 1.0 - false_alarm_rate
    candidates: list[tuple[Candidate, Scorer]] = []
    for kind in kinds:
        scorer = fit_scorer(kind, train)
        own = float(np.quantile(scorer.scores(calibrate), quantile))
        model = to_onnx(scorer, spec, name=name, version=version)
        candidate = Candidate(
            kind=kind,
            threshold=own,
            check_false_alarm_rate=float(np.mean(scorer.scores(check) > own)),
            latency_ms=latency_per_window_ms(model, windows[:64]),
            detail=scorer.detail,
        )
        candidates.append((candidate, scorer))
    best, scorer = min(candidates, key=lambda c: (c[0].check_false_alarm_rate, c[0].latency_ms))
    calibrated = float(np.quantile(scorer.scores(np.concatenate([calibrate, check])), quantile))
    gain = 1.0 if threshold is None else threshold / max(calibrated, EPS)
    return FitResult(
        name=name,
        version=version,
        model=to_onnx(scorer, spec, name=name, version=version, gain=gain),
        spec=spec,
        kind=best.kind,
        threshold=calibrated * gain,
        features=feature_names(spec),
        windows=int(windows.shape[0]),
        false_alarm_rate=best.check_false_alarm_rate,
        latency_ms=best.latency_ms,
        candidates=[c for c, _ in candidates],
    )


def _session(model: bytes) -> ort.InferenceSession:
    """A one-thread CPU session, as a gateway runs a pipeline's model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(model: bytes, windows: F32) -> F32:
    """Scores from ONNX Runtime on one thread, as a gateway computes them."""
    result: F32 = _session(model).run(["score"], {"window": windows})[0]
    return result


def latency_per_window_ms(model: bytes, windows: F32, repeats: int = 50) -> float:
    """Median ms for one window on one thread (the edge runs a window at a time)."""
    session = _session(model)
    one = windows[:1]
    session.run(["score"], {"window": one})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["score"], {"window": one})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def card(result: FitResult, *, file: str, sha256: str) -> ModelCard:
    """The manifest entry of a fitted scorer: what an agent reads and how it was chosen."""
    spec = result.spec
    return ModelCard(
        name=result.name,
        version=result.version,
        file=file,
        sha256=sha256,
        task="score",
        labels=[],
        threshold=round(result.threshold, 6),
        channels=list(spec.channels),
        size=len(result.model),
        inputs=[
            TensorSpec(
                name="window", dtype="float32", shape=["batch", len(spec.channels), spec.size]
            )
        ],
        outputs=[TensorSpec(name="score", dtype="float32", shape=["batch"])],
        sample_rate_hz=spec.rate_hz,
        fit=NormalFit(
            scorer=result.kind,
            reason=result.reason,
            windows=result.windows,
            window_hop=spec.hop,
            features=result.features,
            false_alarm_rate=round(result.false_alarm_rate, 4),
            latency_ms=round(result.latency_ms, 4),
        ),
    )
