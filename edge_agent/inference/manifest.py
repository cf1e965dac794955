"""The schema of a model manifest (``models/manifest.json``), read by the edge.

The schema lives here, not in ``models``: a gateway installs only the edge extra and must
read the file without the ``models`` package. ``ManifestEntry`` holds the fields an agent
reads; ``models.manifest.ModelCard`` extends it with what the build records (tensors, file
size, held-out metrics). Unknown fields are ignored, so an older agent still reads a newer
build's manifest. A leaf: pydantic and ``shared`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import ConfigError
from shared.fields import Name, Sha256

if TYPE_CHECKING:  # the config tree imports OpenCV; this schema must stay light
    from edge_agent.inference.config import ModelTask


class ManifestEntry(BaseModel):
    """One model listed in a manifest; ``file`` is relative to the manifest's directory."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Name
    version: Name
    file: str
    sha256: Sha256 | None = None
    task: str = ""
    """What the model is for: ``detection`` for a detector, else the model's use."""
    labels: list[str]
    normal_label: str | None = None
    """Classifiers: the label that means "all is well"."""
    threshold: float | None = None
    """Scorers: the score above which a window is unlike normal, calibrated on normal data."""
    channels: list[str] | None = None
    """Multi-channel sensor models: the channels of a window ``[C, W]``, in the model's order."""

    def path(self, manifest_dir: Path) -> Path:
        """Where the model file is, given the directory that holds the manifest."""
        return manifest_dir / self.file


EntryT = TypeVar("EntryT", bound=ManifestEntry)


class ManifestFile(BaseModel, Generic[EntryT]):
    """The file as a whole: a list of models (``ManifestFile[ManifestEntry]`` on the edge)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    models: list[EntryT]


def read_manifest(path: Path) -> ManifestFile[ManifestEntry]:
    """The manifest at ``path`` as far as an agent reads it; raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model manifest: {exc.strerror}") from None
    try:
        return ManifestFile[ManifestEntry].model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid model manifest: {exc}") from None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to load a model and read its output (from a manifest entry, a
    pipeline's config, or a signed update)."""

    name: str
    version: str
    path: Path
    labels: tuple[str, ...]
    normal_label: str | None
    task: ModelTask = "anomaly"
    sha256: str | None = None
    """The expected sha256 of the file, when a manifest states it."""
    threshold: float | None = None
    """Score models: the score above which a window is unlike normal."""
    channels: tuple[str, ...] | None = None
    """Multi-channel sensor models: the window's channels, in the model's order."""
