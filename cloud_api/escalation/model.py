"""One cloud model in ONNX Runtime: the session (CUDA when onnxruntime-gpu and a GPU are
there, else the CPU), the input it takes, and its outputs read as a label and a score.

A classifier's output is one row of probabilities per input, in its registry labels' order.
With a ``normal_label`` the score is 1 - p(normal) and the label the likeliest other one when
the score is at least one half (as the edge reads an anomaly model); without one, the label
is the likeliest and the score its probability.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from shared.errors import ContractError, ModelError
from shared.samples import SampleDetection

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_NAMES = {CUDA: "cuda", CPU: "cpu"}
NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
"""The ``.npy`` header versions ``np.save`` writes for a numeric array, and their readers."""


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime offers it (onnxruntime-gpu), the CPU always last."""
    available = set(ort.get_available_providers())
    return [name for name in (CUDA, CPU) if name in available or name == CPU]


def open_session(model: bytes, *, where: str, threads: int = 0) -> tuple[Any, str]:
    """A session on the best provider that starts, and that provider's short name (read back
    from the session: ORT falls back to the CPU by itself when CUDA cannot start)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=preferred_providers())
    except Exception as exc:  # ORT's exceptions share no base but Exception
        raise ModelError(f"cannot load cloud model {where}: {exc}") from exc
    provider = PROVIDER_NAMES.get(session.get_providers()[0], session.get_providers()[0])
    log.info("cloud model %s: ONNX Runtime on %s", where, provider)
    return session, provider


@dataclass(frozen=True, slots=True)
class Answer:
    """A cloud model's reading of one input."""

    label: str
    score: float
    detections: tuple[SampleDetection, ...] = ()
    """A detector's findings in the escalated image's pixels (a classifier has none)."""


class CloudModel:
    """A registry version loaded for the runner; ``run`` answers a batch in one session call."""

    def __init__(
        self,
        model: bytes,
        *,
        name: str,
        version: str,
        sha256: str,
        labels: list[str],
        normal_label: str | None,
        threads: int = 0,
    ) -> None:
        self.name, self.version, self.sha256 = name, version, sha256
        self._session, self.provider = open_session(
            model, where=f"{name} {version}", threads=threads
        )
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"cloud model {name} {version} has {len(inputs)} inputs, not one")
        self._input = inputs[0].name
        shape = list(inputs[0].shape)
        self.input_shape: list[int | None] = [d if isinstance(d, int) else None for d in shape[1:]]
        """One input's shape (the batch axis left out); None where any size fits."""
        self.batch_fixed = isinstance(shape[0], int) if shape else True
        if not labels:
            raise ModelError(f"cloud model {name} {version} has no labels in the registry")
        if normal_label is not None and normal_label not in labels:
            raise ModelError(f"normal label {normal_label!r} is not one of {name}'s labels")
        self.labels = labels
        self._normal = None if normal_label is None else labels.index(normal_label)

    def fits(self, array: npt.NDArray[Any]) -> str | None:
        """Why ``array`` cannot be one input of this model, or None when it can."""
        shape = list(array.shape)
        wanted = self.input_shape
        if len(shape) != len(wanted) or any(
            w is not None and w != s for w, s in zip(wanted, shape, strict=True)
        ):
            shown = ["any" if w is None else w for w in wanted]
            return f"input of shape {shape} does not fit the cloud model's input {shown}"
        return None

    def run(self, inputs: list[npt.NDArray[np.float32]]) -> list[Answer]:
        """One session call for the whole batch (one call per input when the model's batch
        axis is fixed); ModelError for an output that is not one probability row each."""
        if self.batch_fixed:
            rows = [self._call(np.stack([one])) for one in inputs]
            return [answer for row in rows for answer in row]
        return self._call(np.stack(inputs))

    def _call(self, batch: npt.NDArray[np.float32]) -> list[Answer]:
        try:
            output = np.asarray(self._session.run(None, {self._input: batch})[0])
        except Exception as exc:  # ORT's exceptions share no base but Exception
            raise ModelError(f"cloud model {self.name} {self.version} failed: {exc}") from exc
        if output.shape != (batch.shape[0], len(self.labels)) or not np.isfinite(output).all():
            raise ModelError(
                f"cloud model {self.name} {self.version}: output {list(output.shape)} is not "
                f"{len(self.labels)} finite probabilities per input"
            )
        return [self._answer(row) for row in output.astype(np.float64)]

    def _answer(self, row: npt.NDArray[np.float64]) -> Answer:
        if self._normal is None:
            best = int(row.argmax())
            return Answer(self.labels[best], float(np.clip(row[best], 0.0, 1.0)))
        score = float(np.clip(1.0 - row[self._normal], 0.0, 1.0))
        if score < 0.5:
            return Answer(self.labels[self._normal], score)
        others = row.copy()
        others[self._normal] = -np.inf
        return Answer(self.labels[int(others.argmax())], score)


def decode_window(data: bytes) -> npt.NDArray[np.float32]:
    """A ``.npy`` window as float32; ContractError when it is not one finite numeric array.

    The header is read first: one claiming more data than the input holds is refused before
    numpy allocates what it claims."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = NPY_HEADERS.get(version)
        if read_header is None:
            raise ContractError(f"the input is a .npy of version {version}, not 1.0 or 2.0")
        shape, _, dtype = read_header(stream)
    except ValueError as exc:
        raise ContractError(f"the input is not a .npy array: {exc}") from None
    if dtype.kind not in "fiu":
        raise ContractError("the input is not a numeric .npy array")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > len(data):
        raise ContractError(
            f"the .npy header claims {claimed} bytes of data; the input holds {len(data)}"
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ContractError(f"the input is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ContractError("the input is not a numeric .npy array")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ContractError("the input holds values that are not finite")
    return values
