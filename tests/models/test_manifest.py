"""The manifest the build writes, as the build and as an agent read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.inference.manifest import read_manifest
from models import MANIFEST_NAME, default_dir, load_manifest
from shared.errors import ModelError


def test_unreadable_manifest_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / MANIFEST_NAME
    broken.write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(ModelError, match="invalid model manifest"):
        load_manifest(broken)
    with pytest.raises(ModelError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")


def test_an_agent_reads_every_model_the_build_wrote() -> None:
    path = default_dir() / MANIFEST_NAME
    cards = load_manifest(path)
    entries = read_manifest(path).models
    assert len(cards) == 4  # the edge vibration model and detector, their cloud models
    assert [(e.name, e.version, e.file, e.sha256, e.task, e.labels) for e in entries] == [
        (c.name, c.version, c.file, c.sha256, c.task, c.labels) for c in cards
    ]


def test_an_agent_ignores_what_a_newer_build_adds(tmp_path: Path) -> None:
    manifest = json.loads((default_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["generator"] = "aiot 9"
    manifest["models"][0]["quantised"] = True
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    first = read_manifest(tmp_path / MANIFEST_NAME).models[0]
    assert first.name == manifest["models"][0]["name"]
