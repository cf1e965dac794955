"""The shipped vibration model: integrity, what it detects, and a reproducible build."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from edge_agent.sources.machine_physics import FAULTS, LABELS, MachineSpec, SimulatedMachine
from models import MANIFEST_NAME, ModelEntry, default_dir, load_manifest
from models import build as model_build
from models.vibration import NAME
from shared.digests import sha256_file
from shared.errors import ModelError

# Not one of the build's seeds (1000-1005 train, 2000-2005 held out): windows it never saw.
FRESH_SEED = 777


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    (vibration,) = [e for e in load_manifest(default_dir() / MANIFEST_NAME) if e.name == NAME]
    return vibration


@pytest.fixture(scope="module")
def session(entry: ModelEntry) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    path = str(entry.path(default_dir()))
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh build, shared by the tests that need build output (the detector is copied)."""
    out = tmp_path_factory.mktemp("build")
    model_build.build_all(out, only=["vibration"])
    return out


def predict(
    session: ort.InferenceSession, windows: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    probabilities: npt.NDArray[np.float32] = session.run(["probabilities"], {"window": windows})[0]
    labels: npt.NDArray[np.int64] = probabilities.argmax(axis=1)
    return labels


def test_committed_model_matches_its_manifest(entry: ModelEntry) -> None:
    path = entry.path(default_dir())
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size == entry.size
    assert entry.labels == list(LABELS)
    assert entry.normal_label == "healthy"
    assert entry.sample_rate_hz == MachineSpec().sample_rate_hz


def test_session_io_is_what_the_manifest_says(
    entry: ModelEntry, session: ort.InferenceSession
) -> None:
    (model_input,), (model_output,) = session.get_inputs(), session.get_outputs()
    assert [model_input.name, model_output.name] == [entry.inputs[0].name, entry.outputs[0].name]
    assert model_input.type == "tensor(float)"
    assert model_input.shape == entry.inputs[0].shape
    assert model_output.shape == entry.outputs[0].shape


@pytest.mark.parametrize("batch", [1, 7])
def test_probabilities_are_a_distribution_for_any_batch(
    session: ort.InferenceSession, batch: int
) -> None:
    machine = SimulatedMachine(MachineSpec(), seed=FRESH_SEED)
    windows = np.stack([machine.window() for _ in range(batch)])
    (probabilities,) = session.run(["probabilities"], {"window": windows})
    assert probabilities.shape == (batch, len(LABELS))
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fault", FAULTS)
def test_detects_each_developed_fault(session: ort.InferenceSession, fault: str) -> None:
    machine = SimulatedMachine(MachineSpec(), seed=FRESH_SEED)
    windows = np.stack([machine.window(fault, severity=1.0) for _ in range(100)])
    predicted = predict(session, windows)
    assert np.mean(predicted == LABELS.index(fault)) >= 0.95
    assert np.mean(predicted != 0) >= 0.98  # a fault is at least never called healthy


def test_healthy_machine_is_called_healthy(session: ort.InferenceSession) -> None:
    machine = SimulatedMachine(MachineSpec(), seed=FRESH_SEED)
    windows = np.stack([machine.window() for _ in range(300)])
    assert np.mean(predict(session, windows) == 0) >= 0.9


def test_simulated_machine_is_reproducible_from_its_seed() -> None:
    first, second = (SimulatedMachine(MachineSpec(), seed=5) for _ in range(2))
    for fault in (None, *FAULTS):
        np.testing.assert_array_equal(first.window(fault, 0.7), second.window(fault, 0.7))
    assert not np.array_equal(first.window(), SimulatedMachine(MachineSpec(), seed=6).window())


def test_build_is_byte_for_byte_reproducible(built: Path, tmp_path: Path) -> None:
    again = model_build.build_all(tmp_path, only=["vibration"])
    assert again.read_bytes() == (built / MANIFEST_NAME).read_bytes()
    (entry, _) = load_manifest(again)
    assert sha256_file(entry.path(tmp_path)) == sha256_file(entry.path(built)) == entry.sha256
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
    (entry, _) = load_manifest(tmp_path / MANIFEST_NAME)
    model = entry.path(tmp_path)
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))

    model_build.ensure_built(tmp_path)
    assert sha256_file(model) == entry.sha256


def test_unreadable_manifest_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / MANIFEST_NAME
    broken.write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(ModelError, match="invalid model manifest"):
        load_manifest(broken)
    with pytest.raises(ModelError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")
