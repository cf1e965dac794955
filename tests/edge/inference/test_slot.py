"""ONNX Runtime boundary and model slot, on the shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.inference.config import ModelConfig, RuntimeConfig
from edge_agent.inference.runtime import Runtime
from edge_agent.inference.slot import (
    ModelSlot,
    file_sha256,
    load_model,
    load_slot,
    resolve_model,
)
from shared.errors import ConfigError, ModelError
from tests.edge.conftest import MANIFEST, MODEL, model_section


def test_runtime_exposes_names_and_shapes() -> None:
    runtime = Runtime(MODEL)
    assert runtime.input_name == "window"
    assert runtime.input_shape == ("batch", 2048)
    assert runtime.output_names == ["probabilities", "rms_g", "peak_hz"]
    assert runtime.attribute_names == ("rms_g", "peak_hz")
    probabilities = runtime.run(np.zeros((3, 2048), dtype=np.float32))
    assert probabilities.shape == (3, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    answer, rms, peak = runtime.run_all(np.ones((3, 2048), dtype=np.float32))
    assert answer.shape == (3, 6)
    assert rms.shape == peak.shape == (3,)


def test_garbage_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        Runtime(bad)


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        Runtime(tmp_path / "missing.onnx")


def test_wrong_input_is_a_model_error() -> None:
    runtime = Runtime(MODEL)
    with pytest.raises(ModelError, match="inference failed"):
        runtime.run(np.zeros((1, 100), dtype=np.float32))


def test_load_model_computes_sha256_and_reads_labels() -> None:
    slot = load_slot(ModelConfig.model_validate(model_section()), RuntimeConfig())
    model = slot.current()
    assert model.ref.sha256 == file_sha256(MODEL)
    assert model.ref.name == "vibration-anomaly"
    assert model.ref.version == "1.0.0"
    assert model.labels[model.normal_index] == "healthy"
    assert model.window == 2048


def test_manifest_entry_is_resolved_and_verified() -> None:
    spec = resolve_model(ModelConfig(name="vibration-anomaly", manifest=MANIFEST))
    assert spec.path == MODEL
    assert spec.normal_label == "healthy"
    assert load_model(spec, RuntimeConfig()).ref.sha256 == spec.sha256


def test_the_newest_version_in_a_manifest_is_chosen_as_versions_order(tmp_path: Path) -> None:
    """1.10.0 is after 1.9.0, and a job's version ("1.10.0-job12") is compared without a
    TypeError (a part-by-part key compared an int with text and crashed)."""
    manifest = json.loads(MANIFEST.read_text())
    entry = manifest["models"][0]
    manifest["models"] = [
        {**entry, "version": version} for version in ("1.9.0", "1.10.0-job12", "1.10.0", "1.2.0")
    ]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    spec = resolve_model(ModelConfig(name="vibration-anomaly", manifest=tmp_path / "manifest.json"))
    assert spec.version == "1.10.0"


def test_manifest_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    manifest = json.loads(MANIFEST.read_text())
    manifest["models"][0]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(MODEL, tmp_path / MODEL.name)
    spec = resolve_model(ModelConfig(name="vibration-anomaly", manifest=tmp_path / "manifest.json"))
    with pytest.raises(ModelError, match="does not match"):
        load_model(spec, RuntimeConfig())


def test_unknown_manifest_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no model 'nope'"):
        resolve_model(ModelConfig(name="nope", manifest=MANIFEST))


def test_labels_that_do_not_fit_the_output_are_refused() -> None:
    section = model_section() | {"labels": ["healthy", "broken"]}
    with pytest.raises(ModelError, match="does not fit 2 labels"):
        load_slot(ModelConfig.model_validate(section), RuntimeConfig())


def test_swap_replaces_the_current_model_and_returns_the_previous() -> None:
    config = ModelConfig.model_validate(model_section())
    first = load_slot(config, RuntimeConfig()).current()
    second = load_slot(config, RuntimeConfig()).current()
    slot = ModelSlot(first)
    assert slot.swap(second) is first
    assert slot.current() is second
