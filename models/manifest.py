"""The typed reader of ``manifest.json``: what each shipped model file is and how to feed it.

Imports only pydantic and the standard library, so a gateway with onnxruntime and numpy
(and no scikit-learn or onnx) can read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ModelError
from shared.messages import Name, Sha256

MANIFEST_NAME = "manifest.json"


class _Entry(BaseModel):
    # Unknown keys are ignored: an older agent must still read a newer build's manifest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TensorSpec(_Entry):
    """One input or output: its name, element type and shape (a string is a dynamic axis)."""

    name: str
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"]
    shape: list[int | str]


class LabelMetrics(_Entry):
    """Held-out precision and recall of one label, and how many samples (or objects) had it."""

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    support: int = Field(default=0, ge=0)


class Metrics(_Entry):
    """Held-out scores: for a classifier, "any fault" against the normal label; for a
    detector, all boxes of all classes (matched at IoU 0.5)."""

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    per_label: dict[str, LabelMetrics] = Field(default_factory=dict)


class ModelEntry(_Entry):
    """One model of the manifest; ``file`` is relative to the manifest's directory."""

    name: Name
    version: Name
    file: str
    sha256: Sha256
    size: int = Field(gt=0)
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    normal_label: str | None = None  # classifiers: the label that means "all is well"
    sample_rate_hz: float | None = Field(default=None, gt=0)  # models of sampled signals
    metrics: Metrics

    def path(self, manifest_dir: Path) -> Path:
        """Where the model file is, given the directory that holds the manifest."""
        return manifest_dir / self.file


class Manifest(_Entry):
    """The file as a whole: a list of models."""

    models: list[ModelEntry]

    def to_json(self) -> str:
        """The file's text: fields a model does not have are left out, not written as null."""
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def default_dir() -> Path:
    """The directory of the models shipped with this package."""
    return Path(__file__).resolve().parent


def load_manifest(path: Path) -> list[ModelEntry]:
    """Read and validate a manifest; any problem becomes a ModelError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    try:
        return Manifest.model_validate_json(text).models
    except ValidationError as exc:
        raise ModelError(f"invalid model manifest {path}: {exc}") from exc
