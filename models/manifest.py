"""What the build records of each shipped model: the edge's manifest entry plus the model card.

The file's schema is the edge's (:mod:`edge_agent.inference.manifest`), so an agent reads
what the build writes; a ``ModelCard`` adds the input and output tensors, the file size and
the held-out metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.inference.manifest import ManifestEntry, ManifestFile
from shared.errors import ModelError
from shared.fields import Sha256

MANIFEST_NAME = "manifest.json"


class _Record(BaseModel):
    # Unknown keys are ignored: an older agent must still read a newer build's manifest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TensorSpec(_Record):
    """One input or output: its name, element type and shape (a string is a dynamic axis)."""

    name: str
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"]
    shape: list[int | str]


class LabelMetrics(_Record):
    """Held-out precision and recall of one label, and how many samples (or objects) had it."""

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    support: int = Field(default=0, ge=0)

    @classmethod
    def count(cls, *, hits: int, predicted: int, actual: int) -> LabelMetrics:
        """From counts: correct predictions, all predictions, and true instances (support)."""
        return cls(
            precision=round(hits / max(predicted, 1), 4),
            recall=round(hits / max(actual, 1), 4),
            support=actual,
        )


class Metrics(_Record):
    """Held-out scores: for a classifier, "any fault" against the normal label; for a
    detector, all boxes of all classes (matched at IoU 0.5)."""

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    per_label: dict[str, LabelMetrics] = Field(default_factory=dict)


class NormalFit(_Record):
    """A scorer learnt from normal data: how it was chosen and what it costs on a gateway."""

    scorer: str
    reason: str
    windows: int = Field(gt=0)
    window_hop: int = Field(gt=0)
    features: list[str]
    false_alarm_rate: float = Field(ge=0.0, le=1.0)
    """On normal windows held out from the fit (the check part)."""
    latency_ms: float = Field(ge=0.0)
    """ONNX Runtime, one thread, one window."""


class ModelCard(ManifestEntry):
    """One model of the manifest as the build writes it: the entry an agent reads, and
    how to feed the model and how well it did on held-out data."""

    sha256: Sha256  # the build always states it
    size: int = Field(gt=0)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sample_rate_hz: float | None = Field(default=None, gt=0)  # models of sampled signals
    metrics: Metrics | None = None
    """Held-out precision and recall, for models trained with labels."""
    fit: NormalFit | None = None
    """How a model learnt from normal data only was chosen and checked (``fit-normal``)."""


def manifest_json(cards: Sequence[ModelCard]) -> str:
    """The file's text: fields a model does not have are left out, not written as null."""
    text = ManifestFile[ModelCard](models=list(cards)).model_dump_json(indent=2, exclude_none=True)
    return text + "\n"


def default_dir() -> Path:
    """The directory of the models shipped with this package."""
    return Path(__file__).resolve().parent


def load_manifest(path: Path) -> list[ModelCard]:
    """Read and validate a manifest; any problem becomes a ModelError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    try:
        return ManifestFile[ModelCard].model_validate_json(text).models
    except ValidationError as exc:
        raise ModelError(f"invalid model manifest {path}: {exc}") from exc
