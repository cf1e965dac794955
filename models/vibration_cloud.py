"""The cloud's vibration classifier: the edge model's front-end with a deeper, wider MLP,
trained on more windows from more simulated machines.

It answers escalations (``cloud_api.escalation``): the inputs an edge model was unsure about.
The front-end (spectrum, envelope spectrum, time-domain statistics) is the edge model's own
graph (:func:`models.vibration.front_end`), so both models read a window the same way and
differ only in what they learnt: two hidden layers (256, 128) instead of one of 48, on
8 machines x 200 windows per label instead of 6 x 117.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import onnx

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.machine_physics import LABELS
from models import vibration
from models.graph import GraphBuilder
from models.manifest import ModelCard, TensorSpec
from shared.digests import sha256_bytes
from shared.errors import ModelError

NAME = "vibration-anomaly-cloud"
VERSION = "1.0.0"
HIDDEN = (256, 128)
TRAIN_SEED = 3
HELD_OUT_SEED = vibration.HELD_OUT_SEED  # the edge model's held-out set: comparable metrics
TRAIN_MACHINES = 8
TRAIN_PER_MACHINE = 200  # x 8 machines = 1600 windows per label

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeepClassifier:
    """Standardisation and an MLP of several hidden layers, as plain arrays."""

    mean: vibration.F32
    scale: vibration.F32
    weights: list[vibration.F32]
    biases: list[vibration.F32]

    def probabilities(self, feats: vibration.F64) -> vibration.F64:
        """The numpy reference of the graph's classifier: [batch, F] -> softmax [batch, 6]."""
        x = (feats - self.mean) / self.scale
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if layer < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        x = x - x.max(axis=1, keepdims=True)
        exp = np.exp(x)
        result: vibration.F64 = exp / exp.sum(axis=1, keepdims=True)
        return result


def train(feats: vibration.F64, labels: vibration.I64, seed: int) -> DeepClassifier:
    """Fit the scaler and the MLP with scikit-learn on one BLAS thread (reproducible)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    mean = feats.mean(axis=0)
    scale = feats.std(axis=0) + 1e-6
    mlp = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        alpha=1e-3,
        batch_size=256,
        learning_rate_init=2e-3,
        max_iter=80,
        tol=1e-5,
        n_iter_no_change=10,
        random_state=seed,
    )
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit((feats - mean) / scale, labels)
    logger.info("%s: MLP trained for %d epochs, final loss %.4f", NAME, mlp.n_iter_, mlp.loss_)
    if list(mlp.classes_) != list(range(len(LABELS))):
        raise ValueError("training set must contain every label")
    return DeepClassifier(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=[w.astype(np.float32) for w in mlp.coefs_],
        biases=[b.astype(np.float32) for b in mlp.intercepts_],
    )


def to_onnx(clf: DeepClassifier) -> onnx.ModelProto:
    """The whole model as one graph: raw window in g -> probabilities in LABELS order."""
    g = GraphBuilder("vibration_anomaly_cloud")
    feats = vibration.front_end(g, "window").features
    x = g.op("Div", g.op("Sub", feats, g.const("mean", clf.mean)), g.const("scale", clf.scale))
    for layer, (w, b) in enumerate(zip(clf.weights, clf.biases, strict=True)):
        x = g.op("Gemm", x, g.const(f"w{layer}", w), g.const(f"b{layer}", b))
        if layer < len(clf.weights) - 1:
            x = g.op("Relu", x)
    probabilities = g.rename(g.op("Softmax", x, axis=1), "probabilities")
    return g.model(
        inputs=[("window", ["batch", vibration.WINDOW])],
        outputs=[(probabilities, ["batch", len(LABELS)])],
        doc=(
            f"{NAME} {VERSION}: accelerometer window of {vibration.WINDOW} samples at "
            f"{vibration.SAMPLE_RATE_HZ:g} Hz in g -> probabilities of {', '.join(LABELS)}"
        ),
        producer_version=VERSION,
    )


def build() -> tuple[bytes, ModelCard]:
    """Generate data, train, export, check the graph against numpy; the file and its card."""
    train_set = vibration.make_dataset(TRAIN_SEED, TRAIN_PER_MACHINE, machines=TRAIN_MACHINES)
    held_out = vibration.make_dataset(HELD_OUT_SEED, vibration.HELD_OUT_PER_MACHINE)
    classifier = train(vibration.features(train_set.windows), train_set.labels, seed=0)
    model = to_onnx(classifier).SerializeToString()

    graph = Runtime(model).run(held_out.windows)
    reference = classifier.probabilities(vibration.features(held_out.windows))
    error = float(np.abs(graph - reference).max())
    if error > vibration.MAX_GRAPH_ERROR:
        raise ModelError(f"{NAME}: ONNX graph differs from the numpy pipeline by {error:.2e}")
    metrics = vibration.held_out_metrics(graph.argmax(axis=1), held_out.labels)
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
        task=vibration.NAME,
        inputs=[TensorSpec(name="window", dtype="float32", shape=["batch", vibration.WINDOW])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=["batch", len(LABELS)])],
        labels=list(LABELS),
        normal_label=LABELS[0],
        sample_rate_hz=vibration.SAMPLE_RATE_HZ,
        metrics=metrics,
    )
