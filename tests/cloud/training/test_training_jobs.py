"""Training jobs through the real app on SQLite and PostgreSQL: a job over a fleet's labelled
windows registers a better version with its report and lineage; bad input and a gate not met
end in a clear state with nothing registered; a job can be cancelled."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from cloud_api import inspection, registry
from cloud_api.db import create_db_engine
from cloud_api.training import jobs
from cloud_api.training.run import Runner
from cloud_api.training.tables import DatasetVersionRow, TrainedVersionRow, TrainingJobRow
from cloud_api.training.trainers import TRAINERS, Trainer
from cloud_api.training.worker import TrainingWorker, training_context
from edge_agent.sources.machine_physics import LABELS, MachineSpec, SimulatedMachine
from shared.signing import SignedManifest, verify
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher, client_as, new_api_key
from tests.cloud.training.fleet import SHIPPED, labelled_fleet, labelled_windows, register_base

pytestmark = pytest.mark.integration

SMALL = {"base_per_machine": 20, "shipped_test_per_machine": 10, "seed": 0}
"""Seconds of training: 20 base windows per label and machine instead of 117."""
LENIENT = {"max_recall_drop": 0.3, "shipped_max_recall_drop": 0.05,
           "shipped_max_false_alarm_rise": 0.1}  # fmt: skip


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    """The app without its own training worker: each test runs the worker's rounds itself."""
    with make_api(training_enabled=False) as client:
        register_base(client)
        yield client


def worker_of(api: TestClient, **options: Any) -> TrainingWorker:
    """A worker on the app's database and store (``options``: TrainingWorker's)."""
    state = api.app.state  # type: ignore[attr-defined]
    context = training_context(
        state.settings, sessions=state.sessionmaker, store=state.artifacts,
        signing_key=state.signing_key,
    )  # fmt: skip
    return TrainingWorker(context, **{"name": "test-worker", **options})


def job(api: TestClient, agents: list[str], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pipeline": "spindle-vibration",
        "trainer": "vibration-classifier",
        "base_model": "vibration-anomaly",
        "base_version": "1.0.0",
        "selector": {"agents": agents},
        "options": SMALL,
        "gate": LENIENT,
    }
    body.update(changes)
    response = api.post("/api/v1/training-jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["state"] == "queued"
    return created


def run_one(api: TestClient, job_id: int) -> dict[str, Any]:
    assert worker_of(api).run_once() == job_id
    found: dict[str, Any] = api.get(f"/api/v1/training-jobs/{job_id}").json()
    return found


def versions(api: TestClient) -> list[str]:
    return [v["version"] for m in api.get("/api/v1/models").json() for v in m["versions"]]


def count(api: TestClient, row: type[Any]) -> int:
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(row)) or 0)


@pytest.mark.slow  # about 8 s per database: in make test's second phase
def test_a_job_over_labelled_samples_registers_a_better_version_with_its_lineage(
    api: TestClient, publisher: Publisher
) -> None:
    agent_id = labelled_fleet(api, publisher)
    created = job(api, [agent_id])

    done = run_one(api, created["id"])

    assert done["state"] == "succeeded", done["reason"]
    assert done["result_version"] == f"1.0.0-job{created['id']}"
    held_out = done["report"]["sets"]["held_out"]
    assert held_out["base"]["false_alarm_rate"] > 0.2  # the drift: the serving model alarms
    assert held_out["candidate"]["false_alarm_rate"] < held_out["base"]["false_alarm_rate"]
    assert done["progress"] == 1.0
    assert any("froze dataset version" in line for line in done["logs"])
    version = done["result_version"]
    record = api.get(f"/api/v1/models/vibration-anomaly/versions/{version}").json()
    # Signed through the registry's normal path, with the cloud's key; the same labels.
    signed = SignedManifest.model_validate(record["signed_manifest"])
    public_key = api.app.state.signing_key.public_key()  # type: ignore[attr-defined]
    assert verify(signed, public_key).sha256 == record["sha256"]
    assert record["labels"] == list(LABELS)

    lineage = api.get(f"/api/v1/models/vibration-anomaly/versions/{version}/lineage").json()
    assert lineage["parent_version"] == "1.0.0"
    assert lineage["job"]["id"] == created["id"]
    assert lineage["dataset"]["id"] == done["dataset_version_id"]
    assert lineage["dataset"]["counts"]["samples"] == 80
    assert lineage["dataset"]["counts"]["labels"]["normal"] == 40
    assert lineage["dataset"]["label_sources"] == ["person", "cloud"]
    assert len(lineage["dataset"]["sha256"]) == 64
    assert lineage["report"] == done["report"]
    parent = api.get("/api/v1/models/vibration-anomaly/versions/1.0.0/lineage").json()
    assert parent["job"] is None
    assert parent["children"] == [version]
    # An event names the version that produced it: its lineage is that version's.
    event = api.get("/api/v1/events", params={"agent_id": agent_id}).json()["items"][0]
    assert api.get(f"/api/v1/events/{event['id']}/lineage").json() == parent
    missing = api.get("/api/v1/models/vibration-anomaly/versions/9.9.9/lineage")
    assert missing.status_code == 404

    # The same data frozen again is the same dataset version content: the same digest.
    again = run_one(api, job(api, [agent_id], version="1.0.0-again")["id"])
    again_lineage = api.get("/api/v1/models/vibration-anomaly/versions/1.0.0-again/lineage").json()
    assert again["state"] == "succeeded"
    assert again_lineage["dataset"]["sha256"] == lineage["dataset"]["sha256"]


def test_empty_and_one_class_datasets_fail_with_the_reason(
    api: TestClient, publisher: Publisher
) -> None:
    empty = run_one(api, job(api, ["nobody-here"])["id"])
    assert empty["state"] == "failed"
    assert "the dataset is empty" in empty["reason"]

    agent_id = labelled_fleet(api, publisher, normal=12, faults_each=0)
    one_class = run_one(api, job(api, [agent_id])["id"])
    assert one_class["state"] == "failed"
    assert "one class only: all 12 samples are 'normal'" in one_class["reason"]

    # Edge labels are not trusted by default: windows the edge alone labelled make no dataset,
    # though the same windows do when a job trusts the edge.
    windows = [machine_window() for _ in range(6)]
    unreviewed = labelled_windows(api, publisher, [("normal", windows)], verdicts=False)
    by_default = run_one(api, job(api, [unreviewed])["id"])
    assert by_default["state"] == "failed"
    assert by_default["reason"] == (
        "the dataset is empty: no sample matches the selector "
        "(left out: 6 no label from a trusted source)"
    )
    trusting_edge = run_one(
        api,
        job(api, [unreviewed], selector={"agents": [unreviewed], "label_sources": ["edge"]})["id"],
    )
    assert "one class only: all 6 samples are 'normal'" in trusting_edge["reason"]
    assert versions(api) == ["1.0.0"]
    assert count(api, TrainedVersionRow) == 0


def test_a_gate_not_met_rejects_the_candidate_and_registers_nothing(
    api: TestClient, publisher: Publisher
) -> None:
    # A machine the serving model already gets right: no false alarm to take away.
    agent_id = labelled_fleet(api, publisher, spec=MachineSpec(), normal=24, faults_each=3)

    rejected = run_one(api, job(api, [agent_id], gate={})["id"])

    assert rejected["state"] == "rejected", rejected["reason"]
    assert rejected["reason"].startswith("gate not met: held-out false-alarm rate 0.0000 ->")
    assert rejected["report"]["passed"] is False
    assert rejected["result_version"] is None
    assert versions(api) == ["1.0.0"]
    assert count(api, TrainedVersionRow) == 0


def broken_trainer() -> None:
    """In the job's child process: the vibration trainer raises."""

    def broken(*_: object) -> bytes:
        raise RuntimeError("out of memory in the trainer")

    trainer = TRAINERS["vibration-classifier"]
    assert isinstance(trainer, Trainer)
    TRAINERS["vibration-classifier"] = replace(trainer, train=broken)


def test_a_trainer_that_raises_fails_its_job_and_bad_requests_are_refused(
    api: TestClient, publisher: Publisher
) -> None:
    agent_id = labelled_fleet(api, publisher, normal=12, faults_each=2)

    created = job(api, [agent_id])
    assert worker_of(api, child_setup=broken_trainer).run_once() == created["id"]
    crashed = api.get(f"/api/v1/training-jobs/{created['id']}").json()
    assert crashed["state"] == "failed"
    assert crashed["reason"] == "the trainer failed: RuntimeError: out of memory in the trainer"
    assert crashed["result_version"] is None

    assert versions(api) == ["1.0.0"]

    unknown = api.post("/api/v1/training-jobs", json={**job_body(), "trainer": "nope"})
    assert unknown.status_code == 422
    assert "trainer 'nope' is unknown" in unknown.json()["detail"]
    options = api.post("/api/v1/training-jobs", json={**job_body(), "options": {"seeds": 1}})
    assert options.status_code == 422
    assert "options.seeds" in options.json()["detail"]
    missing = api.post("/api/v1/training-jobs", json={**job_body(), "base_version": "9.9.9"})
    assert missing.status_code == 404
    reader = client_as(api, new_api_key(api, "read"))
    assert reader.post("/api/v1/training-jobs", json=job_body()).status_code == 403
    assert reader.get("/api/v1/training-jobs").status_code == 200


def job_body() -> dict[str, Any]:
    return {
        "pipeline": "spindle-vibration",
        "trainer": "vibration-classifier",
        "base_model": "vibration-anomaly",
        "base_version": "1.0.0",
    }


def test_cancel_a_queued_job_and_a_running_one(api: TestClient, publisher: Publisher) -> None:
    agent_id = labelled_fleet(api, publisher, normal=12, faults_each=2)
    queued = job(api, [agent_id])
    cancelled = api.post(f"/api/v1/training-jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert worker_of(api).run_once() is None  # nothing left to claim
    assert api.post(f"/api/v1/training-jobs/{queued['id']}/cancel").status_code == 409
    assert api.post("/api/v1/training-jobs/999999/cancel").status_code == 404

    running = job(api, [agent_id])
    state = api.app.state  # type: ignore[attr-defined]
    context = worker_of(api)._context
    with state.sessionmaker() as session:
        claimed = jobs.claim(session, worker="w", lease=context.lease)
    assert claimed is not None
    assert api.get(f"/api/v1/training-jobs/{running['id']}").json()["state"] == "running"
    assert api.post(f"/api/v1/training-jobs/{running['id']}/cancel").status_code == 200
    with state.sessionmaker() as session:
        Runner(context, session, *claimed).run()
    after = api.get(f"/api/v1/training-jobs/{running['id']}").json()
    assert after["state"] == "cancelled"
    assert after["dataset_version_id"] is None
    assert count(api, DatasetVersionRow) == 0
    assert versions(api) == ["1.0.0"]
    listed = api.get("/api/v1/training-jobs", params={"state": "cancelled"}).json()
    assert [item["id"] for item in listed] == [running["id"], queued["id"]]


def machine_window() -> Any:
    return SimulatedMachine(MachineSpec(), seed=3).window(None)


def test_jobs_whose_candidate_could_never_register_are_refused_with_the_reason(
    api: TestClient,
) -> None:
    registered = api.post("/api/v1/training-jobs", json={**job_body(), "version": "1.0.0"})
    assert registered.status_code == 409
    assert registered.json()["detail"] == (
        "model vibration-anomaly version 1.0.0 is registered already"
    )

    first = job(api, ["press-1"], version="1.1.0")
    taken = api.post("/api/v1/training-jobs", json={**job_body(), "version": "1.1.0"})
    assert taken.status_code == 409
    assert taken.json()["detail"] == (
        f"model vibration-anomaly version 1.1.0 is the candidate of training job {first['id']} "
        "(queued)"
    )
    # Another job's default version is taken too; an ended job's version is free again.
    default = job(api, ["press-1"])
    named_like_it = {**job_body(), "version": f"1.0.0-job{default['id']}"}
    assert api.post("/api/v1/training-jobs", json=named_like_it).status_code == 409
    assert api.post(f"/api/v1/training-jobs/{first['id']}/cancel").status_code == 200
    assert (
        api.post("/api/v1/training-jobs", json={**job_body(), "version": "1.1.0"}).status_code
        == 201
    )

    # A base version of 64 characters registers; its default candidate name would be too long.
    long_base = "1." + "0" * 62
    with SHIPPED.open("rb") as file:
        response = api.post(
            "/api/v1/models/vibration-anomaly/versions", data={"version": long_base},
            files={"file": ("model.onnx", file, "application/octet-stream")},
        )  # fmt: skip
    assert response.status_code == 201, response.text
    too_long = api.post("/api/v1/training-jobs", json={**job_body(), "base_version": long_base})
    assert too_long.status_code == 422
    assert "candidate version '1.00000" in too_long.json()["detail"]
    assert "use 1-64 letters" in too_long.json()["detail"]
    listed = api.get("/api/v1/training-jobs").json()
    assert len(listed) == 3  # the refused ones were never queued


def test_registration_inspects_the_candidate_before_it_locks_anything(
    api: TestClient, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the registry inspects the candidate (a child process, seconds), another session
    can still write the job's row: the runner takes its lock only to write the result."""
    agent_id = labelled_fleet(api, publisher)
    created = job(api, [agent_id])
    state = api.app.state  # type: ignore[attr-defined]
    url = state.settings.database_url
    inspect = inspection.inspect_onnx
    free_during_inspection: list[bool] = []

    def inspecting(*args: Any, **kwargs: Any) -> Any:
        free_during_inspection.append(row_is_free(url, created["id"]))
        return inspect(*args, **kwargs)

    monkeypatch.setattr(registry, "inspect_onnx", inspecting)
    context = worker_of(api)._context
    with state.sessionmaker() as session:
        claimed = jobs.claim(session, worker="w", lease=context.lease)
        assert claimed is not None
        Runner(context, session, *claimed).run()

    done = api.get(f"/api/v1/training-jobs/{created['id']}").json()
    assert done["state"] == "succeeded", done["reason"]
    assert free_during_inspection == [True]


def row_is_free(url: str, job_id: int) -> bool:
    """Whether another connection can lock the job's row (PostgreSQL) or write it (SQLite)
    at once, without waiting."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            try:
                if engine.dialect.name == "postgresql":
                    mine = select(TrainingJobRow.id).where(TrainingJobRow.id == job_id)
                    conn.execute(mine.with_for_update(nowait=True))
                else:
                    conn.exec_driver_sql("PRAGMA busy_timeout=0")
                    touch = update(TrainingJobRow).where(TrainingJobRow.id == job_id)
                    conn.execute(touch.values(progress=TrainingJobRow.progress))
            except OperationalError:
                return False
            finally:
                conn.rollback()
        return True
    finally:
        engine.dispose()
