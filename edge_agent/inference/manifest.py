"""Reading a model manifest (``models/manifest.json``) without importing the ``models`` package.

A gateway installs only the edge extra, so the agent reads the few manifest fields it
needs with its own small, tolerant model (unknown fields are the manifest owner's business).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.inference.config import ModelConfig, ModelTask
from edge_agent.inference.postprocess import read_labels
from shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to load a model and read its output."""

    name: str
    version: str
    path: Path
    labels: tuple[str, ...]
    normal_label: str | None
    task: ModelTask = "anomaly"
    sha256: str | None = None
    """The expected sha256 of the file, when a manifest states it."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    file: str
    sha256: str | None = None
    task: str = ""
    labels: list[str]
    normal_label: str | None = None

    @property
    def pipeline_task(self) -> ModelTask:
        return "detection" if self.task == "detection" else "anomaly"


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    models: list[_Entry]


def resolve_model(config: ModelConfig) -> ModelSpec:
    """The model a pipeline config points at, from the config itself or from a manifest."""
    if config.path is not None:
        # ModelConfig guarantees a version and labels (or a labels file) come with `path`.
        assert config.version is not None
        labels = config.labels
        if labels is None:
            assert config.labels_file is not None
            labels = read_labels(config.labels_file)
        return ModelSpec(
            config.name,
            config.version,
            config.path,
            tuple(labels),
            config.normal_label,
            task=config.task,
        )
    assert config.manifest is not None
    manifest = _read(config.manifest)
    candidates = [
        m for m in manifest.models if m.name == config.name and config.version in (None, m.version)
    ]
    if not candidates:
        wanted = config.name + (f" {config.version}" if config.version else "")
        raise ConfigError(f"{config.manifest}: no model {wanted!r} in the manifest")
    entry = max(candidates, key=lambda m: _version_key(m.version))
    task = entry.pipeline_task
    if task == "anomaly" and entry.normal_label not in entry.labels:
        raise ConfigError(f"{config.manifest}: normal_label of {entry.name} is not a label")
    return ModelSpec(
        entry.name,
        entry.version,
        config.manifest.parent / entry.file,
        tuple(entry.labels),
        entry.normal_label,
        task=task,
        sha256=entry.sha256,
    )


def _read(path: Path) -> _Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model manifest: {exc.strerror}") from None
    try:
        return _Manifest.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid model manifest: {exc}") from None


def _version_key(version: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))
