"""The reproducible build of the shipped models and of their manifest."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from models import MANIFEST_NAME, ModelCard, default_dir, load_manifest
from models import build as model_build
from models.detector import NAME as DETECTOR
from shared.digests import sha256_file


@pytest.fixture(scope="module")
def detector() -> ModelCard:
    (found,) = [e for e in load_manifest(default_dir() / MANIFEST_NAME) if e.name == DETECTOR]
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh build, shared by the tests that need build output (the detector is copied)."""
    out = tmp_path_factory.mktemp("build")
    model_build.build_all(out, only=["vibration"])
    return out


def test_build_is_byte_for_byte_reproducible(built: Path, tmp_path: Path) -> None:
    again = model_build.build_all(tmp_path, only=["vibration"])
    assert again.read_bytes() == (built / MANIFEST_NAME).read_bytes()
    entry = load_manifest(again)[0]  # the vibration model
    assert sha256_file(entry.path(tmp_path)) == sha256_file(entry.path(built)) == entry.sha256
    assert entry.metrics is not None
    assert entry.metrics.recall >= 0.95
    assert entry.metrics.precision >= 0.95


def test_ensure_built_leaves_an_up_to_date_build_alone(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(out_dir: Path) -> Path:
        raise AssertionError(f"rebuilt {out_dir} although it was up to date")

    monkeypatch.setattr(model_build, "build_all", refuse)
    assert model_build.ensure_built(built) == built / MANIFEST_NAME


def test_ensure_built_rebuilds_an_altered_model(built: Path, tmp_path: Path) -> None:
    shutil.copytree(built, tmp_path, dirs_exist_ok=True)
    entry = load_manifest(tmp_path / MANIFEST_NAME)[0]  # the vibration model
    model = entry.path(tmp_path)
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))

    model_build.ensure_built(tmp_path)
    assert sha256_file(model) == entry.sha256


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the build believe torch is not installed (as in CI)."""
    for key in ("detector", "detector-cloud"):
        no_torch = dataclasses.replace(model_build.MODELS[key], needs="no_such_module_aiot")
        monkeypatch.setitem(model_build.MODELS, key, no_torch)


@pytest.mark.usefixtures("without_torch")
def test_build_without_torch_keeps_the_committed_detector(
    detector: ModelCard, tmp_path: Path
) -> None:
    manifest = model_build.build_all(tmp_path, only=["detector"])
    assert manifest.read_bytes() == (default_dir() / MANIFEST_NAME).read_bytes()
    assert sha256_file(detector.path(tmp_path)) == detector.sha256

    # An altered copy is replaced by the committed file, and nothing is trained.
    detector.path(tmp_path).write_bytes(b"not a model")
    assert model_build.stale(tmp_path) == ["detector"]
    model_build.ensure_built(tmp_path)
    assert sha256_file(detector.path(tmp_path)) == detector.sha256


@pytest.mark.slow  # about 9 s: in make test's second phase
def test_the_cloud_vibration_model_builds_to_the_committed_file(tmp_path: Path) -> None:
    """The larger classifier the cloud runs is reproducible and at least as good as the edge's."""
    manifest = model_build.build_all(tmp_path, only=["vibration-cloud"])
    entries = {entry.name: entry for entry in load_manifest(manifest)}
    cloud, edge = entries["vibration-anomaly-cloud"], entries["vibration-anomaly"]
    committed = {e.name: e for e in load_manifest(default_dir() / MANIFEST_NAME)}
    assert sha256_file(cloud.path(tmp_path)) == committed[cloud.name].sha256
    assert cloud.size > edge.size
    assert cloud.metrics is not None
    assert edge.metrics is not None
    assert cloud.metrics.precision >= edge.metrics.precision
    assert cloud.metrics.recall >= 0.95


@pytest.mark.usefixtures("without_torch")
def test_build_without_torch_keeps_the_committed_cloud_detector(tmp_path: Path) -> None:
    """The cloud's detector takes batches, is larger, and is at least as good as the edge's."""
    manifest = model_build.build_all(tmp_path, only=["detector-cloud"])
    assert manifest.read_bytes() == (default_dir() / MANIFEST_NAME).read_bytes()
    entries = {entry.name: entry for entry in load_manifest(manifest)}
    cloud, edge = entries["scene-detector-cloud"], entries[DETECTOR]
    assert sha256_file(cloud.path(tmp_path)) == cloud.sha256
    assert cloud.inputs[0].shape == ["batch", 3, 320, 320]
    assert cloud.outputs[0].shape == ["batch", 6, 1600]
    assert cloud.size > edge.size
    assert cloud.metrics is not None
    assert edge.metrics is not None
    assert cloud.metrics.precision >= edge.metrics.precision
    assert cloud.metrics.recall >= edge.metrics.recall
