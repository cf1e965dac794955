"""The model slot: the one loaded model a pipeline runs right now, and how it is found.

A pipeline's config names its model by a file (with version and labels) or by an entry
of a manifest; ``resolve_model`` turns either into a ``ModelSpec``. Loading computes the
file's sha256 (the identity every event carries), opens an ORT session and runs one
warm-up inference, so the first real window is not slow and a broken model fails at load,
not in the middle of a stream. ``swap`` replaces the model between two inferences: the
pipeline reads ``current()`` once per batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.inference.config import ModelConfig, ModelTask, RuntimeConfig
from edge_agent.inference.manifest import ModelSpec, read_manifest
from edge_agent.inference.postprocess import read_labels
from edge_agent.inference.runtime import Runtime
from shared.digests import sha256_file
from shared.errors import ConfigError, ModelError
from shared.fields import MAX_ATTRIBUTES
from shared.messages import ModelRef
from shared.versions import version_key


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ready session with what is needed to interpret its output."""

    ref: ModelRef
    runtime: Runtime
    labels: tuple[str, ...]
    normal_index: int
    """The normal label's output column (anomaly models; -1 for detectors)."""
    window: int
    """Values per channel the model takes per window (sensor models; 0 for detectors)."""
    fault_indices: tuple[int, ...]
    """Output columns of every label but the normal one."""
    task: ModelTask = "anomaly"
    input_hw: tuple[int, int] = (0, 0)
    """A detector's input height and width (its letterbox size)."""
    input_shape: tuple[int, ...] = ()
    """Sensor models: one input without its batch axis, ``(W,)``, ``(C, W)`` or ``(F,)``."""
    threshold: float | None = None
    """Score models: the score above which a window is unlike normal."""
    channels: tuple[str, ...] | None = None
    """Multi-channel sensor models: the channels of ``(C, W)``, in order (if the manifest says)."""

    def as_batch(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One window (``[W]`` or ``[C, W]``) as a batch of one in the model's input layout."""
        return window.reshape((1, *self.input_shape))


MAX_MODEL_ATTRIBUTES = MAX_ATTRIBUTES - 3
"""A sensor model's attribute outputs at most: the wire takes MAX_ATTRIBUTES, and an event
may add ``duration_s``, ``value`` and ``closed_by`` of its own."""


def resolve_model(config: ModelConfig) -> ModelSpec:
    """The model a pipeline config points at, from the config itself or from a manifest."""
    if config.path is not None:
        # ModelConfig guarantees a version and labels (or a labels file) come with `path`.
        assert config.version is not None
        labels = config.labels
        if labels is None:
            labels = [] if config.labels_file is None else read_labels(config.labels_file)
        return ModelSpec(
            config.name,
            config.version,
            config.path,
            tuple(labels),
            config.normal_label,
            task=config.task,
            threshold=config.threshold,
        )
    assert config.manifest is not None
    manifest = read_manifest(config.manifest)
    candidates = [
        m for m in manifest.models if m.name == config.name and config.version in (None, m.version)
    ]
    if not candidates:
        wanted = config.name + (f" {config.version}" if config.version else "")
        raise ConfigError(f"{config.manifest}: no model {wanted!r} in the manifest")
    entry = max(candidates, key=lambda m: version_key(m.version))
    task: ModelTask = "anomaly"  # a classifier's task names its use ("vibration-anomaly")
    if entry.task == "detection":
        task = "detection"
    elif entry.task == "score":
        task = "score"
    if task == "anomaly" and entry.normal_label not in entry.labels:
        raise ConfigError(f"{config.manifest}: normal_label of {entry.name} is not a label")
    if task == "score" and entry.threshold is None:
        raise ConfigError(f"{config.manifest}: score model {entry.name} has no threshold")
    return ModelSpec(
        entry.name,
        entry.version,
        entry.path(config.manifest.parent),
        tuple(entry.labels),
        entry.normal_label,
        task=task,
        sha256=entry.sha256,
        threshold=entry.threshold,
        channels=tuple(entry.channels) if entry.channels is not None else None,
    )


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (models can be hundreds of MB)."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None


def load_model(spec: ModelSpec, runtime: RuntimeConfig) -> LoadedModel:
    """Verify, load and warm up a model; raise ModelError if it is not usable."""
    sha256 = file_sha256(spec.path)
    if spec.sha256 is not None and spec.sha256 != sha256:
        raise ModelError(f"{spec.path}: sha256 {sha256} does not match the manifest's")
    session = Runtime(
        spec.path,
        intra_op_threads=runtime.intra_op_threads,
        inter_op_threads=runtime.inter_op_threads,
        providers=runtime.providers,
    )
    ref = ModelRef(name=spec.name, version=spec.version, sha256=sha256)
    if spec.task == "detection":
        return _detector(spec, session, ref)
    dims = _sensor_input(spec, session)
    if len(session.attribute_names) > MAX_MODEL_ATTRIBUTES:
        raise ModelError(
            f"{spec.path}: {len(session.attribute_names)} outputs give one number per window, "
            f"more than the {MAX_MODEL_ATTRIBUTES} attributes an event can carry besides its own"
        )
    output, *attributes = session.run_all(np.zeros((1, *dims), dtype=np.float32))
    for name, values in zip(session.attribute_names, attributes, strict=True):
        if values.size != 1:  # a dynamic shape declared [batch] that is not
            raise ModelError(
                f"{spec.path}: output {name!r} gives {values.shape} for one window, not one "
                "number (an output after the first is an attribute of its window)"
            )
    if spec.task == "score":
        if output.size != 1:
            raise ModelError(
                f"{spec.path}: a score model gives one number per window, not {output.shape}"
            )
        return LoadedModel(
            ref, session, (), -1, dims[-1], (), task="score", input_shape=dims,
            threshold=spec.threshold, channels=spec.channels,
        )  # fmt: skip
    probabilities = output
    window = dims[-1]
    if probabilities.shape != (1, len(spec.labels)):
        raise ModelError(
            f"{spec.path}: output shape {probabilities.shape} does not fit "
            f"{len(spec.labels)} labels"
        )
    assert spec.normal_label is not None  # resolve_model guarantees it for anomaly models
    normal_index = spec.labels.index(spec.normal_label)
    faults = tuple(i for i in range(len(spec.labels)) if i != normal_index)
    return LoadedModel(
        ref, session, spec.labels, normal_index, window, faults, input_shape=dims,
        channels=spec.channels,
    )  # fmt: skip


def _sensor_input(spec: ModelSpec, session: Runtime) -> tuple[int, ...]:
    """A sensor model's input without its batch axis: ``(W,)``, ``(C, W)`` or ``(F,)``."""
    shape = session.input_shape
    dims = shape[1:]
    if len(shape) not in (2, 3) or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ModelError(
            f"{spec.path}: expected input [batch, window], [batch, channels, window] or "
            f"[batch, features] with fixed sizes, got {list(shape)}"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _detector(spec: ModelSpec, session: Runtime, ref: ModelRef) -> LoadedModel:
    """A YOLOv8/v11-layout detector: input [1, 3, H, W], output [1, 4 + C, N] (or transposed)."""
    shape = session.input_shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]) or shape[1] != 3:
        raise ModelError(f"{spec.path}: expected input [1, 3, H, W], got {list(shape)}")
    height, width = int(shape[2]), int(shape[3])  # type: ignore[arg-type]
    output = session.run(np.zeros((1, 3, height, width), dtype=np.float32))
    columns = 4 + len(spec.labels)
    if output.ndim != 3 or columns not in output.shape[1:]:
        raise ModelError(
            f"{spec.path}: output shape {output.shape} does not fit {len(spec.labels)} labels "
            f"(expected [1, {columns}, N])"
        )
    return LoadedModel(
        ref, session, spec.labels, -1, 0, (), task="detection", input_hw=(height, width)
    )


class ModelSlot:
    """Holds the active model; readers never block, ``swap`` is atomic."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._lock = threading.Lock()

    def current(self) -> LoadedModel:
        """The model to use for the next batch (a plain read: swaps replace the reference)."""
        return self._model

    def swap(self, model: LoadedModel) -> LoadedModel:
        """Make ``model`` current and return the previous one (kept for a rollback)."""
        with self._lock:
            previous, self._model = self._model, model
        return previous


def load_slot(model: ModelConfig, runtime: RuntimeConfig) -> ModelSlot:
    """A slot holding the model a pipeline config points at, verified and warmed up."""
    return ModelSlot(load_model(resolve_model(model), runtime))
