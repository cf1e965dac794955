"""Model versions for rollout tests, built from the shipped vibration model, and their manifests.

``write_same_model`` writes the shipped model as another version: only its doc string and
metadata differ, so the file (and its sha256) is new and the behaviour is the same.
``write_nan_model`` writes a model that loads, warms up on zeros and passes a golden self-test
computed from itself (golden inputs are in [0, 1)), but answers NaN for any window with a
negative value, which every real vibration window has: it fails at inference, after the swap.
``write_slow_model`` gives the same answers tens of times slower (for the latency check).
``sign_manifest`` signs what the cloud's registry would sign for a file, golden values included.
Deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper

from models.release import write_release
from shared.golden import golden_input, golden_reference, golden_sample
from shared.signing import ModelManifest, SignedManifest, TensorSpec, sign

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "models" / "vibration-anomaly-1.0.0.onnx"
MODEL_NAME = "vibration-anomaly"
LABELS = [
    "healthy",
    "imbalance",
    "misalignment",
    "bearing_outer_race",
    "bearing_inner_race",
    "impact",
]
WINDOW = 2048
INPUTS = [TensorSpec(name="window", dtype="float32", shape=["batch", WINDOW])]
OUTPUTS = [TensorSpec(name="probabilities", dtype="float32", shape=["batch", len(LABELS)])]


def _retag(model: onnx.ModelProto, version: str) -> None:
    model.doc_string = f"{MODEL_NAME} {version} (test fixture)"
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "version", version


def write_same_model(path: Path, version: str) -> Path:
    """The shipped model as ``version``: another file, the same graph and weights."""
    return write_release(SHIPPED_MODEL, path, name=MODEL_NAME, version=version, note="test fixture")


def write_nan_model(path: Path, version: str, value: float = float("nan")) -> Path:
    """The shipped model, but every output ``value`` (NaN unless told) for every window
    holding a negative value."""
    model = onnx.load(str(SHIPPED_MODEL))
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = "probabilities_ok"
    graph.initializer.extend(
        [
            helper.make_tensor("fixture_zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("fixture_nan", TensorProto.FLOAT, [], [value]),
        ]
    )
    graph.node.extend(
        [
            # Opset 17: ReduceMin takes its axes as an attribute.
            helper.make_node(
                "ReduceMin", [graph.input[0].name], ["fixture_min"], keepdims=1, axes=[1]
            ),
            helper.make_node("Less", ["fixture_min", "fixture_zero"], ["fixture_negative"]),
            helper.make_node(
                "Where", ["fixture_negative", "fixture_nan", "probabilities_ok"], [output]
            ),
        ]
    )
    _retag(model, version)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_slow_model(path: Path, version: str, *, matmuls: int = 2) -> Path:
    """The shipped model with the same output, plus ``matmuls`` 2048x2048 products per window
    whose result is multiplied by zero: tens of times slower, and correct."""
    model = onnx.load(str(SHIPPED_MODEL))
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = "probabilities_ok"
    weights = np.full((WINDOW, WINDOW), 1e-4, dtype=np.float32)
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(weights, "fixture_weights"),
            helper.make_tensor("fixture_zero", TensorProto.FLOAT, [], [0.0]),
        ]
    )
    hidden = graph.input[0].name
    for i in range(matmuls):
        graph.node.append(helper.make_node("MatMul", [hidden, "fixture_weights"], [f"slow_{i}"]))
        hidden = f"slow_{i}"
    graph.node.extend(
        [
            helper.make_node("ReduceSum", [hidden], ["fixture_sum"], keepdims=1),
            helper.make_node("Mul", ["fixture_sum", "fixture_zero"], ["fixture_nothing"]),
            helper.make_node("Add", ["probabilities_ok", "fixture_nothing"], [output]),
        ]
    )
    _retag(model, version)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def golden_output(path: Path) -> list[float]:
    """The golden sample of ``path``'s output for the standard golden input (computed with ORT)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = golden_input(golden_reference(), INPUTS[0])
    (out,) = session.run([OUTPUTS[0].name], {INPUTS[0].name: feed})
    return golden_sample(np.asarray(out))


def sign_manifest(
    path: Path,
    name: str,
    version: str,
    private_key: Ed25519PrivateKey,
    *,
    labels: list[str] | None = None,
    golden: list[float] | None = None,
    task: str = "anomaly",
) -> SignedManifest:
    """A signed manifest for the file at ``path``, as the registry would make it.

    ``golden`` defaults to the file's own output for the golden input; pass other values to
    build a manifest whose self-test fails.
    """
    data = path.read_bytes()
    manifest = ModelManifest(
        name=name,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        task=task,
        inputs=INPUTS,
        outputs=OUTPUTS,
        labels=LABELS if labels is None else labels,
        golden_input=golden_reference(),
        golden_output=golden_output(path) if golden is None else golden,
    )
    return sign(manifest, private_key)
