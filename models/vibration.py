"""The vibration-anomaly model: raw accelerometer window in, fault probabilities out.

Everything between the sensor and the probabilities lives in the ONNX graph, so an edge
agent feeds raw samples and never re-implements the signal processing (and a new model
version may change its front-end without touching agent code). This module holds the
numpy reference of that front-end, the training set, the training and the export; the
graph is checked against the reference at build time.

Front-end (all on one window, mean removed):

- spectrum: Hann window, real DFT, power summed in log-spaced bands (shaft orders get
  single-bin bands, the high band where bearings ring gets wide ones);
- envelope spectrum: the 2.4-5.6 kHz band of that spectrum is demodulated to baseband by
  an inverse DFT of just those bins (its magnitude is the bearing-resonance envelope,
  decimated 4x for free), then its spectrum, normalised by its mean, in narrow bands up
  to 600 Hz: this is where BPFO and BPFI show, as in classic envelope analysis;
- time domain: log RMS, log crest factor, log kurtosis.

Besides the probabilities the graph gives what an operator reads first on an event, from the
nodes it computes anyway: ``rms_g`` (the window's RMS, mean removed) and ``peak_hz`` (the
strongest bin of the windowed spectrum, DC left out). The edge puts a model's per-window
outputs on its events as they are (``edge_agent.inference.runtime``), so it computes no
spectrum of its own for an event: ~130 us an event after an inference, issue 15.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.machine_physics import LABELS, MachineSpec, SimulatedMachine
from models.graph import GraphBuilder
from models.manifest import LabelMetrics, Metrics, ModelCard, TensorSpec
from shared.digests import sha256_bytes
from shared.errors import ModelError

NAME = "vibration-anomaly"
VERSION = "1.0.0"
SPEC = MachineSpec()
WINDOW = SPEC.window
SAMPLE_RATE_HZ = SPEC.sample_rate_hz
# The demodulated band: 512 bins of 6.25 Hz from 2.4 kHz, where bearing impacts ring.
DEMOD_START = 384
DEMOD_BINS = 512
EPS = 1e-6

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def hann() -> F32:
    """The periodic Hann window (the DFT-even one, as spectral analysis wants)."""
    n = np.arange(WINDOW, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW)).astype(np.float32)


def band_matrix(edges: I64, bins: int) -> F32:
    """A [bins, len(edges)-1] 0/1 matrix: a MatMul with it sums power per band."""
    matrix = np.zeros((bins, edges.size - 1), dtype=np.float32)
    for band, (lo, hi) in enumerate(itertools.pairwise(edges)):
        matrix[lo:hi, band] = 1.0
    return matrix


def spectrum_edges() -> I64:
    """48 log-spaced bands from 12.5 Hz to Nyquist, at least one bin (6.25 Hz) wide."""
    raw = np.rint(np.geomspace(2, WINDOW // 2 + 1, 70)).astype(np.int64)
    edges: I64 = np.unique(raw)
    return edges


def envelope_edges() -> I64:
    """Envelope bands of two bins (12.5 Hz) from 12.5 Hz to 600 Hz: 1x..20x shaft speed."""
    edges: I64 = np.arange(2, 98, 2, dtype=np.int64)
    return edges


def features(windows: F32) -> F64:
    """The numpy reference of the graph's front-end: [batch, WINDOW] in g -> [batch, F]."""
    x = windows.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(x * hann(), axis=1)
    power = np.abs(spectrum) ** 2
    bands = power @ band_matrix(spectrum_edges(), power.shape[1])
    envelope = np.abs(np.fft.ifft(spectrum[:, DEMOD_START : DEMOD_START + DEMOD_BINS], axis=1))
    env_power = np.abs(np.fft.rfft(envelope, axis=1)) ** 2
    env_bands = env_power @ band_matrix(envelope_edges(), env_power.shape[1])
    env_dc = envelope.mean(axis=1, keepdims=True) ** 2
    mean_square = (x**2).mean(axis=1, keepdims=True)
    rms = np.sqrt(mean_square)
    crest = np.abs(x).max(axis=1, keepdims=True) / (rms + EPS)
    kurtosis = (x**4).mean(axis=1, keepdims=True) / (mean_square**2 + EPS)
    return np.concatenate(
        [
            np.log(bands + EPS),
            np.log(env_bands + EPS) - np.log(env_dc + EPS),
            np.log(rms + EPS),
            np.log(crest + EPS),
            np.log(kurtosis + EPS),
        ],
        axis=1,
    )


@dataclass(frozen=True, slots=True)
class Dataset:
    """Raw windows with their label index into LABELS and the fault severity (0 if healthy)."""

    windows: F32
    labels: I64
    severities: F64


def make_dataset(seed: int, per_machine: int, machines: int = 6) -> Dataset:
    """``per_machine`` windows of each label from each of several simulated machines.

    The machines' resonances differ, so the model cannot learn one frame's; fault severity
    is uniform in 0.3-1.0, and healthy variety (load, speed, noise) comes from the simulator.
    """
    rng = np.random.default_rng(seed)
    windows: list[F32] = []
    labels: list[int] = []
    severities: list[float] = []
    for machine_index in range(machines):
        spec = MachineSpec(
            bearing_resonance_hz=float(rng.uniform(3000.0, 4400.0)),
            structure_resonance_hz=float(rng.uniform(800.0, 1500.0)),
        )
        machine = SimulatedMachine(spec, seed=seed * 1000 + machine_index)
        for label_index, label in enumerate(LABELS):
            for _ in range(per_machine):
                severity = 0.0 if label_index == 0 else float(rng.uniform(0.3, 1.0))
                fault = None if label_index == 0 else label
                windows.append(machine.window(fault, severity or 1.0))
                labels.append(label_index)
                severities.append(severity)
    return Dataset(
        windows=np.stack(windows),
        labels=np.asarray(labels, dtype=np.int64),
        severities=np.asarray(severities, dtype=np.float64),
    )


@dataclass(frozen=True, slots=True)
class Classifier:
    """Standardisation and a one-hidden-layer MLP, as plain arrays (what the graph embeds)."""

    mean: F32
    scale: F32
    hidden_weights: F32
    hidden_bias: F32
    output_weights: F32
    output_bias: F32

    def probabilities(self, feats: F64) -> F64:
        """The numpy reference of the graph's classifier: [batch, F] -> softmax [batch, 6]."""
        z = (feats - self.mean) / self.scale
        hidden = np.maximum(z @ self.hidden_weights + self.hidden_bias, 0.0)
        logits = hidden @ self.output_weights + self.output_bias
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result: F64 = exp / exp.sum(axis=1, keepdims=True)
        return result


def train(feats: F64, labels: I64, seed: int) -> Classifier:
    """Fit scaler + MLP with scikit-learn on one BLAS thread (so weights are reproducible)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    mean = feats.mean(axis=0)
    scale = feats.std(axis=0) + 1e-6
    mlp = MLPClassifier(
        hidden_layer_sizes=(48,),
        alpha=1e-3,
        batch_size=128,
        learning_rate_init=2e-3,
        max_iter=150,
        tol=1e-5,
        n_iter_no_change=15,
        random_state=seed,
    )
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # Stopping at max_iter is fine: the held-out metrics, not the optimiser, judge the fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit((feats - mean) / scale, labels)
    logger.info("MLP trained for %d epochs, final loss %.4f", mlp.n_iter_, mlp.loss_)
    if list(mlp.classes_) != list(range(len(LABELS))):
        raise ValueError("training set must contain every label")
    (w1, w2), (b1, b2) = mlp.coefs_, mlp.intercepts_
    return Classifier(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        hidden_weights=w1.astype(np.float32),
        hidden_bias=b1.astype(np.float32),
        output_weights=w2.astype(np.float32),
        output_bias=b2.astype(np.float32),
    )


class FrontEnd(NamedTuple):
    """The front end's nodes: the features ([batch, F]), and two the event attributes are
    computed from (``event_attributes``)."""

    features: str
    rms: str
    """[batch, 1]: the RMS of the mean-removed window."""
    power: str
    """[batch, bins]: the power spectrum of the Hann-windowed window."""


def front_end(g: GraphBuilder, window: str) -> FrontEnd:
    """Graph of :func:`features`: [batch, WINDOW] -> [batch, F]."""
    eps = g.const("eps", EPS)
    x = g.op("Sub", window, g.op("ReduceMean", window, axes=[1], keepdims=1))
    xw = g.op("Unsqueeze", g.op("Mul", x, g.const("hann", hann())), g.axes(2))
    spectrum = g.op("DFT", xw, onesided=1, axis=1)  # [batch, bins, 2]: re, im
    power = g.op("ReduceSum", g.op("Mul", spectrum, spectrum), g.axes(2), keepdims=0)
    bins = WINDOW // 2 + 1
    bands = g.op("MatMul", power, g.const("spectrum_bands", band_matrix(spectrum_edges(), bins)))

    demod = g.op(
        "Slice",
        spectrum,
        g.const("demod_start", [DEMOD_START], np.int64),
        g.const("demod_end", [DEMOD_START + DEMOD_BINS], np.int64),
        g.axes(1),
    )
    analytic = g.op("DFT", demod, inverse=1, axis=1)
    envelope = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", analytic, analytic), g.axes(2)))
    env_spectrum = g.op("DFT", envelope, onesided=1, axis=1)
    env_power = g.op("ReduceSum", g.op("Mul", env_spectrum, env_spectrum), g.axes(2), keepdims=0)
    env_matrix = band_matrix(envelope_edges(), DEMOD_BINS // 2 + 1)
    env_bands = g.op("MatMul", env_power, g.const("envelope_bands", env_matrix))
    env_mean = g.op("ReduceMean", envelope, axes=[1], keepdims=0)  # [batch, 1]
    env_dc = g.op("Mul", env_mean, env_mean)

    mean_square = g.op("ReduceMean", g.op("Mul", x, x), axes=[1], keepdims=1)
    rms = g.op("Sqrt", mean_square)
    peak = g.op("ReduceMax", g.op("Abs", x), axes=[1], keepdims=1)
    crest = g.op("Div", peak, g.op("Add", rms, eps))
    fourth = g.op("ReduceMean", g.op("Mul", g.op("Mul", x, x), g.op("Mul", x, x)), axes=[1])
    kurtosis = g.op("Div", fourth, g.op("Add", g.op("Mul", mean_square, mean_square), eps))

    def log(value: str) -> str:
        return g.op("Log", g.op("Add", value, eps))

    env_relative = g.op("Sub", log(env_bands), log(env_dc))
    parts = [log(bands), env_relative, log(rms), log(crest), log(kurtosis)]
    return FrontEnd(g.op("Concat", *parts, axis=1), rms, power)


def event_attributes(g: GraphBuilder, front: FrontEnd) -> tuple[str, str]:
    """Graph of :func:`attributes`: ``rms_g`` and ``peak_hz``, each [batch], from the front
    end's nodes (the edge model outputs them; the cloud's, which no event reads, does not)."""
    bins = WINDOW // 2 + 1
    above_dc = g.op(
        "Slice", front.power, g.const("first_bin", [1], np.int64),
        g.const("last_bin", [bins], np.int64), g.axes(1),
    )  # fmt: skip
    peak_bin = g.op("Cast", g.op("ArgMax", above_dc, axis=1, keepdims=0), to=TensorProto.FLOAT)
    bin_hz = g.const("bin_hz", SAMPLE_RATE_HZ / WINDOW)
    peak_hz = g.op("Mul", g.op("Add", peak_bin, g.const("one", 1.0)), bin_hz)
    return g.op("Squeeze", front.rms, g.axes(1)), peak_hz


def attributes(windows: F32) -> dict[str, F64]:
    """The numpy reference of the graph's ``rms_g`` and ``peak_hz``: [batch, WINDOW] ->
    one value per window each."""
    x = windows.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(x * hann(), axis=1)) ** 2
    peak_bin = power[:, 1:].argmax(axis=1) + 1
    return {
        "rms_g": np.sqrt((x**2).mean(axis=1)),
        "peak_hz": peak_bin * (SAMPLE_RATE_HZ / WINDOW),
    }


def _classifier(g: GraphBuilder, feats: str, clf: Classifier) -> str:
    """Graph of :meth:`Classifier.probabilities`: [batch, F] -> softmax [batch, 6]."""
    z = g.op("Div", g.op("Sub", feats, g.const("mean", clf.mean)), g.const("scale", clf.scale))
    hidden = g.op(
        "Gemm", z, g.const("hidden_w", clf.hidden_weights), g.const("hidden_b", clf.hidden_bias)
    )
    w2, b2 = g.const("output_w", clf.output_weights), g.const("output_b", clf.output_bias)
    logits = g.op("Gemm", g.op("Relu", hidden), w2, b2)
    return g.op("Softmax", logits, axis=1)


def to_onnx(clf: Classifier) -> onnx.ModelProto:
    """The whole model as one ONNX graph: raw window in g -> probabilities in LABELS order."""
    g = GraphBuilder("vibration_anomaly")
    front = front_end(g, "window")
    rms_g, peak_hz = event_attributes(g, front)
    probabilities = g.rename(_classifier(g, front.features, clf), "probabilities")
    return g.model(
        inputs=[("window", ["batch", WINDOW])],
        outputs=[
            (probabilities, ["batch", len(LABELS)]),
            (g.rename(rms_g, "rms_g"), ["batch"]),
            (g.rename(peak_hz, "peak_hz"), ["batch"]),
        ],
        doc=(
            f"{NAME} {VERSION}: accelerometer window of {WINDOW} samples at "
            f"{SAMPLE_RATE_HZ:g} Hz in g -> probabilities of {', '.join(LABELS)}"
        ),
        producer_version=VERSION,
    )


TRAIN_SEED = 1
HELD_OUT_SEED = 2
TRAIN_PER_MACHINE = 117  # x 6 machines = 702 windows per label
HELD_OUT_PER_MACHINE = 50  # x 6 machines = 300 windows per label
MAX_GRAPH_ERROR = 1e-4
MAX_ATTRIBUTE_ERROR = 1e-4


def held_out_metrics(predicted: I64, truth: I64) -> Metrics:
    """Precision/recall of "any fault" vs healthy, and of each label on its own."""
    per_label = {
        label: _precision_recall(predicted == index, truth == index)
        for index, label in enumerate(LABELS)
    }
    overall = _precision_recall(predicted != 0, truth != 0)
    return Metrics(precision=overall.precision, recall=overall.recall, per_label=per_label)


def _precision_recall(
    predicted: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]
) -> LabelMetrics:
    return LabelMetrics.count(
        hits=int(np.sum(predicted & truth)), predicted=int(predicted.sum()), actual=int(truth.sum())
    )


def build() -> tuple[bytes, ModelCard]:
    """Generate data, train, export, check the graph against numpy; the file and its card.

    The graph runs in the edge's ONNX Runtime session, on one thread as a gateway runs it.
    """
    train_set = make_dataset(TRAIN_SEED, TRAIN_PER_MACHINE)
    held_out = make_dataset(HELD_OUT_SEED, HELD_OUT_PER_MACHINE)
    classifier = train(features(train_set.windows), train_set.labels, seed=0)
    model = to_onnx(classifier).SerializeToString()

    runtime = Runtime(model)
    graph, *graph_attributes = runtime.run_all(held_out.windows)
    reference = classifier.probabilities(features(held_out.windows))
    error = float(np.abs(graph - reference).max())
    if error > MAX_GRAPH_ERROR:
        raise ModelError(f"{NAME}: ONNX graph differs from the numpy pipeline by {error:.2e}")
    expected = attributes(held_out.windows)
    for name, values in zip(runtime.attribute_names, graph_attributes, strict=True):
        # float32 against float64: a relative error; a peak one bin off is a wrong peak.
        worst = float(np.max(np.abs(values - expected[name]) / (np.abs(expected[name]) + EPS)))
        if worst > MAX_ATTRIBUTE_ERROR:
            raise ModelError(f"{NAME}: the graph's {name} differs from numpy's by {worst:.1e}")
    metrics = held_out_metrics(graph.argmax(axis=1), held_out.labels)
    logger.info(
        "%s %s: graph matches numpy within %.1e; held-out fault precision %.3f recall %.3f",
        *(NAME, VERSION, error, metrics.precision, metrics.recall),
    )

    return model, ModelCard(
        name=NAME,
        version=VERSION,
        file=f"{NAME}-{VERSION}.onnx",
        sha256=sha256_bytes(model),
        size=len(model),
        task=NAME,
        inputs=[TensorSpec(name="window", dtype="float32", shape=["batch", WINDOW])],
        outputs=[
            TensorSpec(name="probabilities", dtype="float32", shape=["batch", len(LABELS)]),
            TensorSpec(name="rms_g", dtype="float32", shape=["batch"]),
            TensorSpec(name="peak_hz", dtype="float32", shape=["batch"]),
        ],
        labels=list(LABELS),
        normal_label=LABELS[0],
        sample_rate_hz=SAMPLE_RATE_HZ,
        metrics=metrics,
    )
