"""A fit-normal scorer refitted by a training job on the normal windows a machine collected
after its normal moved: the false alarms stop at the pipeline's own threshold, the faults
are still caught, and the version is registered with its lineage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cloud_api.training.worker import TrainingWorker, training_context
from models.normal import FitResult, fit_normal
from models.window_features import WindowSpec
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher
from tests.cloud.training.fleet import labelled_windows

pytestmark = pytest.mark.integration

SIZE = 64
SPEC = WindowSpec(channels=("x", "y"), size=SIZE, hop=SIZE)


def readings(rng: np.random.Generator, count: int, *, freq: float) -> np.ndarray[Any, Any]:
    """Two channels of a machine turning at ``freq`` cycles per reading, with noise."""
    t = np.arange(count)
    x = np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.1, count)
    y = 0.5 * np.cos(2 * np.pi * freq * t) + rng.normal(0, 0.1, count)
    return np.stack([x, y], axis=1)


def windows(values: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    return [values[i : i + SIZE].T.astype(np.float32) for i in range(0, len(values) - SIZE, SIZE)]


@pytest.fixture
def fitted() -> FitResult:
    """The scorer the gateway fitted before the drift (`aiot models fit-normal`)."""
    return fit_normal(readings(np.random.default_rng(0), 20_000, freq=0.11), SPEC,
                      name="press-normal", version="1.0.0")  # fmt: skip


@pytest.fixture
def api(make_api: AppFactory, fitted: FitResult) -> Iterator[TestClient]:
    with make_api(training_enabled=False) as client:
        response = client.post(
            "/api/v1/models/press-normal/versions",
            data={"version": "1.0.0", "task": "score"},
            files={"file": ("model.onnx", fitted.model, "application/octet-stream")},
        )
        assert response.status_code == 201, response.text
        yield client


def test_a_refit_on_the_new_normal_stops_the_false_alarms_and_keeps_the_faults(
    api: TestClient, publisher: Publisher, fitted: FitResult
) -> None:
    rng = np.random.default_rng(1)
    drifted = readings(rng, 320 * SIZE, freq=0.17)  # a new speed: the old scorer alarms
    faulty = readings(rng, 30 * SIZE, freq=0.17) + rng.normal(0, 0.8, (30 * SIZE, 2))
    agent_id = labelled_windows(
        api, publisher, [("normal", windows(drifted)), ("looseness", windows(faulty))],
        pipeline="press-score",
    )  # fmt: skip
    response = api.post(
        "/api/v1/training-jobs",
        json={
            "pipeline": "press-score", "trainer": "fit-normal", "base_model": "press-normal",
            "base_version": "1.0.0", "selector": {"agents": [agent_id]},
            "options": {"threshold": fitted.threshold},
        },
    )  # fmt: skip
    assert response.status_code == 201, response.text
    state = api.app.state  # type: ignore[attr-defined]
    context = training_context(
        state.settings, sessions=state.sessionmaker, store=state.artifacts,
        signing_key=state.signing_key,
    )  # fmt: skip
    TrainingWorker(context).run_once()

    done = api.get(f"/api/v1/training-jobs/{response.json()['id']}").json()
    assert done["state"] == "succeeded", done["reason"]
    held_out = done["report"]["sets"]["held_out"]
    assert held_out["base"]["false_alarm_rate"] == 1.0
    assert held_out["candidate"]["false_alarm_rate"] <= 0.1
    assert held_out["candidate"]["recall"] == held_out["base"]["recall"] == 1.0
    assert "shipped" not in done["report"]["sets"]  # a machine's own scorer has no shipped set
    lineage = api.get(
        f"/api/v1/models/press-normal/versions/{done['result_version']}/lineage"
    ).json()
    assert lineage["parent_version"] == "1.0.0"
    assert lineage["dataset"]["counts"]["labels"] == {"normal": 319, "looseness": 29}
