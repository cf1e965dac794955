"""The model slot: the one loaded model a pipeline runs right now.

Loading computes the file's sha256 (the identity every event carries), opens an ORT
session and runs one warm-up inference, so the first real window is not slow and a broken
model fails at load, not in the middle of a stream. ``swap`` replaces the model between
two inferences: the pipeline reads ``current()`` once per batch.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.config import ModelConfig, RuntimeConfig
from edge_agent.inference.manifest import ModelSpec, resolve_model
from edge_agent.inference.runtime import Runtime
from shared.errors import ModelError
from shared.messages import ModelRef


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ready session with what is needed to interpret its output."""

    ref: ModelRef
    runtime: Runtime
    labels: tuple[str, ...]
    normal_index: int
    window: int
    """The number of samples the model takes per window (its input's second dimension)."""
    fault_indices: tuple[int, ...]
    """Output columns of every label but the normal one."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (models can be hundreds of MB)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None
    return digest.hexdigest()


def load_model(spec: ModelSpec, runtime: RuntimeConfig) -> LoadedModel:
    """Verify, load and warm up a model; raise ModelError if it is not usable."""
    sha256 = file_sha256(spec.path)
    if spec.sha256 is not None and spec.sha256 != sha256:
        raise ModelError(f"{spec.path}: sha256 {sha256} does not match the manifest's")
    session = Runtime(
        spec.path,
        intra_op_threads=runtime.intra_op_threads,
        inter_op_threads=runtime.inter_op_threads,
    )
    shape = session.input_shape
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ModelError(f"{spec.path}: expected input shape [batch, window], got {list(shape)}")
    window = shape[1]
    probabilities = session.run(np.zeros((1, window), dtype=np.float32))
    if probabilities.shape != (1, len(spec.labels)):
        raise ModelError(
            f"{spec.path}: output shape {probabilities.shape} does not fit "
            f"{len(spec.labels)} labels"
        )
    ref = ModelRef(name=spec.name, version=spec.version, sha256=sha256)
    normal_index = spec.labels.index(spec.normal_label)
    faults = tuple(i for i in range(len(spec.labels)) if i != normal_index)
    return LoadedModel(ref, session, spec.labels, normal_index, window, faults)


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
