"""What an uploaded ONNX file is, found out by a child process with time and memory limits.

ONNX Runtime parses and runs whatever an operator uploads: a model can ask for terabytes,
loop for ever or crash the runtime. So the registry never loads one in the API process. A
child (``python -m cloud_api.inspection``) caps its own address space (``RLIMIT_AS``) and
CPU time, loads the model with one thread, records its inputs and outputs, runs its golden
self-test and prints one JSON answer. The parent kills it at the timeout. Every way this
can go wrong, the model's fault or a refusal of the limits, is a ModelError with a reason
the uploader can act on, so the API answers 422 and never 5xx.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.errors import ModelError
from shared.signing import TensorSpec

log = logging.getLogger(__name__)

MIB = 1024 * 1024
TIMED_RUNS = 15
"""Golden-input runs timed after the self-test (a few ms for the shipped models)."""
TIMING_BUDGET_S = 1.0
MAX_TENSOR_NAME = 256
"""Characters of an input or output name: they go into manifests and SQL as text."""

# ONNX Runtime's element type names, as numpy spells them in manifests.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


@dataclass(frozen=True, slots=True)
class InspectionLimits:
    """How long and how much memory the child may take to load and self-test one model.

    Memory is the child's whole address space: the interpreter, NumPy and ONNX Runtime take
    about 200 MiB of it before the model does.
    """

    timeout_s: float = 60.0
    memory_bytes: int = 2048 * MIB


@dataclass(frozen=True, slots=True)
class Inspection:
    """What loading a model told us: its tensors and, when it has one, its golden self-test."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    golden_input: str | None
    golden_output: list[float] | None
    run_ms: float | None = None
    """Median time of one run on the golden input, one thread (what the placement report
    calls the cloud's inference time of this model)."""


class _Answer(BaseModel):
    """The child's one line on stdout: an inspection, or why there is none."""

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    golden_input: str | None = None
    golden_output: list[float] | None = None
    run_ms: float | None = None
    error: str | None = None
    out_of_memory: bool = False


def inspect_onnx(path: Path, *, limits: InspectionLimits | None = None) -> Inspection:
    """Inputs, outputs and golden self-test of the model at ``path``, found by a child.

    The golden self-test (``shared.golden``) is the first output of the model run on the
    golden input for its first input. A model whose first input is not float32 gets none
    (both None): golden inputs are float32 noise, and its agents skip the self-test. So does
    a model with more than one input (noise cannot stand for the meaning of the others).
    ModelError, with the reason, if ONNX Runtime cannot load the model, a one-input float32
    model cannot run its golden input or gives no finite numeric tensor first (its agents
    could never pass the self-test), or the child goes over its time or memory limit.
    """
    limits = limits or InspectionLimits()
    command = [
        sys.executable,
        "-m",
        __name__,  # this module: its main() below is the child
        str(path),
        str(limits.memory_bytes),
        str(math.ceil(limits.timeout_s) + 1),  # CPU seconds: a backstop should we die first
    ]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.timeout_s,
            env=_child_environment(),
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed the child already
        raise ModelError(
            f"model inspection took longer than its limit of {limits.timeout_s:g} s "
            "(loading the model and running its golden self-test once)"
        ) from None
    answer = _read_answer(done.stdout)
    if answer is None:
        log.warning(
            "model inspection ended with %s and no answer: %s",
            _ending(done.returncode),
            done.stderr[-2000:].decode(errors="replace"),
        )
        raise ModelError(
            f"model inspection ended with {_ending(done.returncode)} before it could answer: "
            f"the model crashed ONNX Runtime or needed more than {limits.memory_bytes // MIB} "
            "MiB of memory"
        )
    if answer.out_of_memory:
        raise ModelError(
            f"model needs more than the inspection's limit of {limits.memory_bytes // MIB} MiB "
            f"of memory to load and run its golden self-test: {answer.error}"
        )
    if answer.error is not None:
        raise ModelError(answer.error)
    return Inspection(
        answer.inputs, answer.outputs, answer.golden_input, answer.golden_output, answer.run_ms
    )


def _child_environment() -> dict[str, str]:
    """The child finds our packages where we did, uses one thread everywhere, and gets no
    other variable of ours (database URLs, keys)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _read_answer(stdout: bytes) -> _Answer | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        return _Answer.model_validate_json(lines[-1])
    except ValidationError:
        return None


def _ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _limit_myself(memory_bytes: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _inspect_here(path: Path) -> _Answer:
    """The inspection itself, in this process: only the child calls it."""
    import numpy as np
    import onnxruntime

    from shared.golden import golden_input, golden_reference, golden_sample

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own untyped errors for every kind of bad file
        return _failure(exc, path, "not a loadable ONNX model")

    inputs, outputs = _specs(session.get_inputs()), _specs(session.get_outputs())
    for spec in (*inputs, *outputs):
        if len(spec.name) > MAX_TENSOR_NAME or "\x00" in spec.name:
            return _Answer(
                error=f"tensor name {spec.name[:40]!r} is not allowed: at most "
                f"{MAX_TENSOR_NAME} characters and no NUL"
            )
    if len(inputs) != 1 or inputs[0].dtype != "float32" or not outputs:
        return _Answer(inputs=inputs, outputs=outputs)
    first, result = inputs[0], outputs[0]
    kind = session.get_outputs()[0].type
    if not kind.startswith("tensor("):
        return _Answer(
            error=f"first output {result.name!r} is a {kind}, not a tensor (a ZipMap "
            "or another sequence or map): the golden self-test needs a numeric tensor first; "
            "export the model without it (skl2onnx: options={'zipmap': False})"
        )
    if kind == "tensor(string)":
        return _Answer(
            error=f"first output {result.name!r} is a string tensor: the golden self-test "
            "needs numbers first; put a numeric output (scores, probabilities) first"
        )
    reference = golden_reference()
    feed = {first.name: golden_input(reference, first)}
    try:
        value = session.run([result.name], feed)[0]
        sample = golden_sample(value)
    except Exception as exc:  # ORT's errors are untyped here too
        return _failure(exc, path, "model cannot run its golden self-test input")
    finite = np.isfinite(sample)
    if not finite.all():
        at = int(np.argmin(finite))
        return _Answer(
            error=f"the golden self-test output of {result.name!r} is not finite ({sample[at]} "
            f"at sampled value {at}): a model that gives NaN or inf on its self-test input "
            "could never pass it on an agent"
        )
    return _Answer(
        inputs=inputs, outputs=outputs, golden_input=reference, golden_output=sample,
        run_ms=_median_run_ms(lambda: session.run([result.name], feed)),
    )  # fmt: skip


def _median_run_ms(run: Callable[[], object]) -> float:
    """The median of up to ``TIMED_RUNS`` timed calls, within ``TIMING_BUDGET_S`` (one at
    least: a slow model must not push the inspection past its time limit)."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < TIMED_RUNS and (
        not times or time.perf_counter() - started < TIMING_BUDGET_S
    ):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _specs(args: list[Any]) -> list[TensorSpec]:
    return [
        TensorSpec(
            name=arg.name, dtype=_DTYPES.get(arg.type, arg.type), shape=list(arg.shape or [])
        )
        for arg in args
    ]


def _failure(exc: BaseException, path: Path, what: str) -> _Answer:
    text = str(exc).strip() or type(exc).__name__
    # The reason goes back to the uploader: it must not show where the server keeps files.
    reason = text.splitlines()[0][:300].replace(str(path), "the upload")
    memory = isinstance(exc, MemoryError) or "alloc" in text.lower()
    return _Answer(error=f"{what}: {reason}", out_of_memory=memory)


def main(argv: list[str]) -> int:
    """``python -m cloud_api.inspection PATH MEMORY_BYTES CPU_S``: one JSON line on stdout."""
    path, memory_bytes, cpu_s = Path(argv[0]), int(argv[1]), int(argv[2])
    _limit_myself(memory_bytes, cpu_s)
    try:
        answer = _inspect_here(path)
    except MemoryError:
        answer = _Answer(error="MemoryError", out_of_memory=True)
    sys.stdout.write(answer.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
