"""The shipped vibration model: integrity and what it detects."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from edge_agent.sources.machine_physics import FAULTS, LABELS, MachineSpec, SimulatedMachine
from models import MANIFEST_NAME, ModelCard, default_dir, load_manifest, vibration
from models.vibration import NAME
from shared.digests import sha256_file

# Not one of the build's seeds (1000-1005 train, 2000-2005 held out): windows it never saw.
FRESH_SEED = 777


@pytest.fixture(scope="module")
def entry() -> ModelCard:
    (vibration,) = [e for e in load_manifest(default_dir() / MANIFEST_NAME) if e.name == NAME]
    return vibration


@pytest.fixture(scope="module")
def session(entry: ModelCard) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    path = str(entry.path(default_dir()))
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def predict(
    session: ort.InferenceSession, windows: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    probabilities: npt.NDArray[np.float32] = session.run(["probabilities"], {"window": windows})[0]
    labels: npt.NDArray[np.int64] = probabilities.argmax(axis=1)
    return labels


def test_committed_model_matches_its_manifest(entry: ModelCard) -> None:
    path = entry.path(default_dir())
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size == entry.size
    assert entry.labels == list(LABELS)
    assert entry.normal_label == "healthy"
    assert entry.sample_rate_hz == MachineSpec().sample_rate_hz


def test_session_io_is_what_the_manifest_says(
    entry: ModelCard, session: ort.InferenceSession
) -> None:
    (model_input,), outputs = session.get_inputs(), session.get_outputs()
    assert model_input.name == entry.inputs[0].name
    assert model_input.type == "tensor(float)"
    assert model_input.shape == entry.inputs[0].shape
    assert [(o.name, o.shape) for o in outputs] == [(o.name, o.shape) for o in entry.outputs]
    assert [o.name for o in outputs] == ["probabilities", "rms_g", "peak_hz"]


def test_the_level_and_peak_outputs_are_numpy_s_on_fresh_windows(
    session: ort.InferenceSession,
) -> None:
    machine = SimulatedMachine(MachineSpec(), seed=FRESH_SEED)
    windows = np.stack([machine.window(fault) for fault in (None, *FAULTS)]).astype(np.float32)
    rms, peak = session.run(["rms_g", "peak_hz"], {"window": windows})
    expected = vibration.attributes(windows)
    np.testing.assert_allclose(rms, expected["rms_g"], rtol=1e-4)
    np.testing.assert_array_equal(peak, expected["peak_hz"])


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
