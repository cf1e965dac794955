"""The only module that imports onnxruntime: a session behind a small typed surface.

ORT raises its own pybind exception classes (which share no base but ``Exception``); they
are translated into ``ModelError`` here, so nothing else needs to know about them.

Execution providers are chosen here too: the first of the configured preference this
onnxruntime build offers (``cuda`` needs onnxruntime-gpu, ``openvino`` onnxruntime-openvino),
the CPU when none does, and the choice is logged and kept in ``Runtime.provider``. ORT itself
falls back to the CPU without a word when a provider it offers cannot start (no GPU, a missing
CUDA library): the session's own list is read back, so that fallback is logged as well.

A model's first output is its answer (probabilities, a score, detections). Its later outputs
of one number per input (``[batch]`` or ``[batch, 1]``, numeric, a name the wire takes as an
attribute name) are *attributes*: what the graph computed anyway and an event on that input
should carry (the vibration model's ``rms_g`` and ``peak_hz``). ``run_all`` returns them
after the answer; other outputs are never fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

from edge_agent.inference.config import Provider
from shared.errors import ModelError
from shared.fields import MAX_ATTRIBUTE_NAME

log = logging.getLogger(__name__)

ORT_PROVIDERS: dict[Provider, str] = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_CONFIG_NAMES = {ort_name: name for name, ort_name in ORT_PROVIDERS.items()}


def provider_order(preferred: Sequence[Provider]) -> tuple[list[Provider], str]:
    """The providers of ``preferred`` this onnxruntime offers, in order and ending with the
    CPU (always there), and what was left out, for the log line."""
    available = set(ort.get_available_providers())
    offered: list[Provider] = [name for name in preferred if ORT_PROVIDERS[name] in available]
    missing = [name for name in preferred if name not in offered]
    reason = f"{', '.join(missing)} not available in this onnxruntime" if missing else "preferred"
    return list(dict.fromkeys([*offered, "cpu"])), reason


def _open(
    source: str | bytes, options: ort.SessionOptions, preferred: Sequence[Provider], where: str
) -> tuple[ort.InferenceSession, Provider]:
    """A session on the first provider that starts, and that provider (read back from the
    session: ORT may put the CPU in a provider's place by itself)."""
    order, reason = provider_order(preferred)
    for name in order[:-1]:  # the accelerators; the CPU is last
        try:
            session = _session(source, options, name)
        except Exception as exc:  # ORT's exceptions share no base but Exception
            log.warning("model %s: %s could not start (%s); trying the next", where, name, exc)
            reason = f"{name} could not start"
            continue
        actual = _CONFIG_NAMES.get(session.get_providers()[0], "cpu")
        if actual != name:
            log.warning("model %s: %s could not start; ORT runs it on %s", where, name, actual)
            reason = f"{name} could not start"
        log.info("model %s: ONNX Runtime on %s (%s)", where, actual, reason)
        return session, actual
    try:
        session = _session(source, options, "cpu")
    except Exception as exc:  # ORT's exceptions share no base but Exception
        raise ModelError(f"cannot load ONNX model {where}: {exc}") from exc
    log.info("model %s: ONNX Runtime on cpu (%s)", where, reason)
    return session, "cpu"


def _session(
    source: str | bytes, options: ort.SessionOptions, provider: Provider
) -> ort.InferenceSession:
    providers = list(dict.fromkeys([ORT_PROVIDERS[provider], ORT_PROVIDERS["cpu"]]))
    return ort.InferenceSession(source, sess_options=options, providers=providers)


class Runtime:
    """An ONNX Runtime session on the chosen provider, sequential execution, threads as
    configured."""

    __slots__ = (
        "_all_names",
        "_feed_name",
        "_output_names",
        "_run",
        "_session",
        "attribute_names",
        "input_shape",
        "output_shapes",
        "provider",
    )

    def __init__(
        self,
        model: Path | bytes,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[Provider] = ("cpu",),
    ) -> None:
        """Open ``model``: a file, or the bytes of one (a build measures what it just made),
        on the first of ``providers`` available (the CPU otherwise)."""
        source = model if isinstance(model, bytes) else str(model)
        where = "(in memory)" if isinstance(model, bytes) else str(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session, self.provider = _open(source, options, providers, where)
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
        self.attribute_names: tuple[str, ...] = tuple(
            o.name for o in outputs[1:] if _is_attribute(o.name, o.type, tuple(o.shape))
        )
        """The outputs after the first that are attributes of their input, in order."""
        self._all_names = [outputs[0].name, *self.attribute_names]
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

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the model on one batch; its first output, then its ``attribute_names``."""
        try:
            return self._run(self._all_names, {self._feed_name: batch}, None)
        except Exception as exc:  # ORT's exceptions share no base but Exception
            raise ModelError(f"inference failed: {exc}") from exc


def _is_attribute(name: str, kind: str, shape: tuple[int | str | None, ...]) -> bool:
    """Whether an output gives one number per input under a name an attribute can have."""
    numeric = kind in ("tensor(float)", "tensor(double)", "tensor(int32)", "tensor(int64)")
    per_input = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    return numeric and per_input and 0 < len(name) <= MAX_ATTRIBUTE_NAME and "\x00" not in name


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
