"""The job queue on SQLite and PostgreSQL: a job whose worker died is re-queued when its
lease runs out (and failed after too many tries), the dead worker's late writes change
nothing, and the API's own worker runs queued jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.training import jobs
from cloud_api.training.spec import JobSpec
from cloud_api.training.worker import MAX_ATTEMPTS
from shared.messages import utcnow
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import wait_until

LEASE = timedelta(seconds=30)
SPEC = JobSpec(
    pipeline="spindle-vibration", trainer="vibration-classifier",
    base_model="vibration-anomaly", base_version="1.0.0",
)  # fmt: skip


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield create_sessionmaker(engine)
    engine.dispose()


def test_a_dead_workers_job_is_requeued_and_its_late_writes_are_ignored(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        job_id = jobs.create_job(session, SPEC, created_by="test").id
        first = jobs.claim(session, worker="dead", lease=LEASE)
        assert first is not None
        assert first[0] == job_id
        assert jobs.claim(session, worker="other", lease=LEASE) is None  # one claim per job
        # Within the lease nothing moves; past it the job goes back to the queue.
        assert jobs.requeue_expired(session, now=utcnow(), max_attempts=MAX_ATTEMPTS) == 0
        later = utcnow() + 2 * LEASE
        assert jobs.requeue_expired(session, now=later, max_attempts=MAX_ATTEMPTS) == 1
        second = jobs.claim(session, worker="alive", lease=LEASE)
        assert second is not None
        assert second[0] == job_id

        # The dead worker comes back: none of its writes lands.
        assert not jobs.report(session, *first, lease=LEASE, progress=0.5, line="late")
        assert not jobs.finish(session, *first, state="succeeded", reason="late")
        assert jobs.report(session, *second, lease=LEASE, progress=0.5, line="mine")
        row = jobs.get_job(session, job_id)
        assert row is not None
        session.refresh(row)
        assert (row.state, row.worker, row.attempts) == ("running", "alive", 2)
        assert [line.split(" ", 1)[1] for line in row.logs] == ["mine"]


def test_a_job_whose_workers_keep_dying_fails_with_the_reason(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        job_id = jobs.create_job(session, SPEC, created_by="test").id
        now = utcnow()
        for attempt in range(MAX_ATTEMPTS):
            assert jobs.claim(session, worker=f"w{attempt}", lease=LEASE) is not None
            now += 2 * LEASE
            jobs.requeue_expired(session, now=now, max_attempts=MAX_ATTEMPTS)
        row = jobs.get_job(session, job_id)
        assert row is not None
        session.refresh(row)
        assert row.state == "failed"
        assert row.reason == f"its worker stopped reporting {MAX_ATTEMPTS} times (lease expired)"
        assert jobs.claim(session, worker="late", lease=LEASE) is None


@pytest.mark.integration
def test_the_apis_own_worker_runs_queued_jobs(make_api: AppFactory, tmp_path: Path) -> None:
    with make_api(training_poll_s=0.1) as api:
        shipped = Path(__file__).resolve().parents[3] / "models" / "vibration-anomaly-1.0.0.onnx"
        with shipped.open("rb") as file:
            api.post(
                "/api/v1/models/vibration-anomaly/versions",
                data={"version": "1.0.0"},
                files={"file": ("model.onnx", file, "application/octet-stream")},
            )
        created = api.post("/api/v1/training-jobs", json=SPEC.model_dump(mode="json")).json()

        def ended() -> dict[str, str] | None:
            found: dict[str, str] = api.get(f"/api/v1/training-jobs/{created['id']}").json()
            return found if found["state"] not in ("queued", "running") else None

        done = wait_until(ended, timeout=60, what="the job run by the API's worker")
    assert done["state"] == "failed"
    assert done["reason"].startswith("the dataset is empty")
