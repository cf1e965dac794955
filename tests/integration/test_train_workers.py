"""Two `aiot cloud train-worker` processes on one PostgreSQL database and five queued jobs:
each job is claimed and run exactly once (FOR UPDATE SKIP LOCKED), and all of them are done.
Which worker takes which job is up to scheduling (one worker may well take them all)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.config import Settings
from cloud_api.main import create_app
from tests.cloud.helpers import Publisher, new_api_key, wait_until
from tests.cloud.training.fleet import labelled_fleet, register_base
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

AIOT = Path(sys.executable).parent / "aiot"
JOBS = 5
CLAIMED = re.compile(r"worker (\S+) claimed training job (\d+)")
TINY = {"base_per_machine": 4, "shipped_test_per_machine": 4}
OPEN_GATE = {"require_false_alarm_drop": False, "max_recall_drop": 1.0,
             "shipped_max_recall_drop": 1.0, "shipped_max_false_alarm_rise": 1.0}  # fmt: skip
"""The gate lets every candidate in: the test is about who runs a job, not its quality."""


@contextmanager
def train_workers(db_url: str, data_dir: Path) -> Iterator[list[tuple[Path, Any]]]:
    """Two worker processes; whatever happens, each is ended by its pid."""
    started: list[tuple[Path, Any]] = []
    try:
        for name in ("w1", "w2"):
            log = data_dir / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(AIOT), "cloud", "train-worker", "--db", db_url, "--data-dir",
                     str(data_dir), "--poll-s", "0.1", "--name", name],
                    stdout=out, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
            started.append((log, process))
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


@pytest.mark.slow  # about 30 s: in make test's second phase
def test_two_train_workers_run_five_jobs_each_exactly_once(
    postgres_url: str, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=postgres_url,
        mqtt_url=broker.url,
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:12]}",
        ingest_flush_s=0.01,
        data_dir=tmp_path,
        training_enabled=False,
    )
    publisher = Publisher("127.0.0.1", broker.port).connect()
    with TestClient(create_app(settings)) as api, train_workers(postgres_url, tmp_path) as workers:
        api.headers["Authorization"] = f"Bearer {new_api_key(api, 'admin')}"
        api.app.state.ingest.wait_connected()  # type: ignore[attr-defined]
        register_base(api)
        agent_id = labelled_fleet(api, publisher, normal=16, faults_each=3)
        wait_until(
            lambda: all("started" in log.read_text() for log, _ in workers),
            timeout=60,
            what="both workers started",
        )
        ids = [_queue(api, agent_id, n) for n in range(JOBS)]

        def finished() -> list[dict[str, Any]] | None:
            found = [api.get(f"/api/v1/training-jobs/{job_id}").json() for job_id in ids]
            return found if all(j["state"] not in ("queued", "running") for j in found) else None

        done = wait_until(finished, timeout=300, what="every job finished")
        models = api.get("/api/v1/models").json()
    publisher.close()

    assert [job["state"] for job in done] == ["succeeded"] * JOBS, [j["reason"] for j in done]
    assert [job["attempts"] for job in done] == [1] * JOBS
    claims = Counter(
        (worker, int(job_id))
        for log, _ in workers
        for worker, job_id in CLAIMED.findall(log.read_text())
    )
    assert sorted(job_id for _, job_id in claims) == sorted(ids)  # each claimed once
    assert set(claims.values()) == {1}
    assert [job["worker"] for job in done] == [  # the worker that claimed it ran it
        next(worker for worker, job_id in claims if job_id == job["id"]) for job in done
    ]
    registered = [v["version"] for model in models for v in model["versions"]]
    assert sorted(registered) == ["1.0.0", *(f"1.1.{n}" for n in range(JOBS))]


def _queue(api: TestClient, agent_id: str, n: int) -> int:
    response = api.post(
        "/api/v1/training-jobs",
        json={
            "pipeline": "spindle-vibration",
            "trainer": "vibration-classifier",
            "base_model": "vibration-anomaly",
            "base_version": "1.0.0",
            "version": f"1.1.{n}",
            "selector": {"agents": [agent_id]},
            "options": {**TINY, "seed": n},
            "gate": OPEN_GATE,
        },
    )
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id
