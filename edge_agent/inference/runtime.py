"""The only module that imports onnxruntime: a session behind a small typed surface.

ORT raises its own pybind exception classes (which share no base but ``Exception``); they
are translated into ``ModelError`` here, so nothing else needs to know about them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

from shared.errors import ModelError


class Runtime:
    """An ONNX Runtime session on the CPU, sequential execution, threads as configured."""

    __slots__ = (
        "_feed_name",
        "_output_names",
        "_run",
        "_session",
        "input_shape",
        "output_shapes",
    )

    def __init__(
        self, model: Path | bytes, *, intra_op_threads: int = 1, inter_op_threads: int = 1
    ) -> None:
        """Open ``model``: a file, or the bytes of one (a build measures what it just made)."""
        source = model if isinstance(model, bytes) else str(model)
        where = "(in memory)" if isinstance(model, bytes) else str(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT's exceptions share no base but Exception
            raise ModelError(f"cannot load ONNX model {where}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{where}: expected one input, the model has {len(inputs)}")
        self._feed_name: str = inputs[0].name
        self.input_shape: tuple[int | str | None, ...] = tuple(inputs[0].shape)
        outputs = self._session.get_outputs()
        self._output_names: list[str] = [outputs[0].name]
        self.output_shapes: dict[str, tuple[int | str | None, ...]] = {
            o.name: tuple(o.shape) for o in outputs
        }
        self._run = _bound_run(self._session)

    @property
    def input_name(self) -> str:
        return self._feed_name

    @property
    def output_names(self) -> list[str]:
        return list(self.output_shapes)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on one batch; return its first output."""
        try:
            result = self._run(self._output_names, {self._feed_name: batch}, None)
        except Exception as exc:  # ORT's exceptions share no base but Exception
            raise ModelError(f"inference failed: {exc}") from exc
        output: np.ndarray = result[0]
        return output


def _bound_run(session: ort.InferenceSession) -> Callable[..., list[np.ndarray]]:
    """The C++ session's ``run``, called without ``InferenceSession.run``'s Python checks.

    Those checks cost about 5 µs a call, as much as a small scorer's whole inference, and none
    applies here: the one input is always fed, feeds are numpy arrays (not OrtValues bound to
    another session), no WebGPU graph capture, and this module picks the providers itself (no
    EP fallback to retry). An onnxruntime without the binding gets the public ``run``.
    """
    binding = getattr(session, "_sess", None)
    run = getattr(binding, "run", None)
    return cast(Callable[..., list[np.ndarray]], run if callable(run) else session.run)
