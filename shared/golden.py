"""The self-test a signed manifest carries: a golden input and the output it must give.

The cloud runs a model once when it is registered and signs what came out; an agent runs the
same input on the session it just loaded, before it swaps it in. The input is not shipped: it
is named by a seed (``rng:<seed>``) and generated on both sides the same way, so a manifest
stays small even for a 320x320 detector. The output is a strided sample of at most
``GOLDEN_VALUES`` values of the model's first output.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.errors import ContractError, ModelError
from shared.signing import ModelManifest, TensorSpec

GOLDEN_VALUES = 256
GOLDEN_SEED = 20261122
RTOL = 1e-3
ATOL = 1e-4
"""Tolerances: enough for ORT builds and CPUs that round differently, far below a real change."""


def golden_reference(seed: int = GOLDEN_SEED) -> str:
    """How a manifest names its golden input."""
    return f"rng:{seed}"


def golden_input(reference: str, spec: TensorSpec) -> npt.NDArray[np.float32]:
    """The input ``reference`` names, shaped for ``spec`` (dynamic axes are 1), in [0, 1)."""
    kind, _, seed = reference.partition(":")
    if kind != "rng" or not seed.isdigit():
        raise ContractError(f"golden input {reference!r} is not of the form 'rng:<seed>'")
    if spec.dtype != "float32":
        raise ContractError(f"golden inputs are float32; input {spec.name} is {spec.dtype}")
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
    return np.random.default_rng(int(seed)).random(shape, dtype=np.float32)


def golden_sample(output: npt.NDArray[np.generic]) -> list[float]:
    """At most ``GOLDEN_VALUES`` values of ``output``, taken with a fixed stride."""
    flat = np.asarray(output, dtype=np.float64).ravel()
    stride = max(1, -(-flat.size // GOLDEN_VALUES))
    return [float(v) for v in flat[::stride][:GOLDEN_VALUES]]


def check_golden(manifest: ModelManifest, output: npt.NDArray[np.generic]) -> None:
    """Raise ModelError unless ``output`` (of the golden input) matches the manifest's."""
    if manifest.golden_output is None:
        return
    got = golden_sample(output)
    want = manifest.golden_output
    if len(got) != len(want):
        raise ModelError(
            f"self-test: output has {len(got)} sampled values, the manifest expects {len(want)}"
        )
    if not np.all(np.isfinite(got)):
        raise ModelError("self-test: output is not finite")
    close = np.isclose(got, want, rtol=RTOL, atol=ATOL)
    if not close.all():
        first = int(np.argmin(close))
        raise ModelError(
            f"self-test: {int((~close).sum())} of {len(want)} values differ from the manifest "
            f"(first at {first}: {got[first]:.6g} != {want[first]:.6g})"
        )
