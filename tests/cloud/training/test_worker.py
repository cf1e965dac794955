"""A training runs in a child process its worker ends: a cancel or a lease lost to another
worker stops a trainer that never reports, a worker asked to stop queues its job again at
once, and a trainer that dies (out of memory) fails its job without taking the worker down.

The trainers here are swapped in the child (``child_setup``): one never returns, one is
killed the way the kernel kills a process out of memory."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from cloud_api.training import jobs
from cloud_api.training.trainers import TRAINERS, Trainer
from cloud_api.training.worker import MAX_ATTEMPTS, TrainingWorker
from shared.messages import utcnow
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher, wait_until
from tests.cloud.training.fleet import labelled_fleet, register_base
from tests.cloud.training.test_training_jobs import job, worker_of

pytestmark = pytest.mark.integration

WAIT_S = 180.0
"""How long a test waits for a job to move before it fails (not a measured time)."""


def hanging_trainer() -> None:
    """In the job's child: the vibration trainer never returns (and never reports)."""

    def hang(*_: object) -> bytes:
        while True:
            time.sleep(60)

    trainer = TRAINERS["vibration-classifier"]
    assert isinstance(trainer, Trainer)
    TRAINERS["vibration-classifier"] = replace(trainer, train=hang)


def dying_trainer() -> None:
    """In the job's child: the trainer's process is killed as the kernel kills it out of
    memory."""

    def die(*_: object) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    trainer = TRAINERS["vibration-classifier"]
    assert isinstance(trainer, Trainer)
    TRAINERS["vibration-classifier"] = replace(trainer, train=die)


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    """The app without its own training worker: each test starts the workers it needs."""
    with make_api(training_enabled=False) as client:
        register_base(client)
        yield client


@pytest.fixture
def agent_id(api: TestClient, publisher: Publisher) -> str:
    return labelled_fleet(api, publisher, normal=12, faults_each=2)


def found(api: TestClient, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/training-jobs/{job_id}").json()
    return body


def wait_training(api: TestClient, job_id: int) -> None:
    """Until the job's trainer has been called."""
    wait_until(
        lambda: any("training on" in line for line in found(api, job_id)["logs"]),
        timeout=WAIT_S,
        what=f"job {job_id} training",
    )


def wait_ended(api: TestClient, job_id: int) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body = found(api, job_id)
        return body if body["state"] not in ("queued", "running") else None

    return wait_until(ended, timeout=WAIT_S, what=f"job {job_id} ended")


def hanging_worker(api: TestClient) -> TrainingWorker:
    return worker_of(api, poll_s=0.1, check_s=0.2, child_setup=hanging_trainer)


def test_a_cancel_ends_a_training_that_never_reports(api: TestClient, agent_id: str) -> None:
    hung = job(api, [agent_id])
    worker = hanging_worker(api)
    worker.start()
    try:
        wait_training(api, hung["id"])
        assert api.post(f"/api/v1/training-jobs/{hung['id']}/cancel").status_code == 200
        # The worker runs one job at a time: it takes the next only once the training ended.
        follower = job(api, ["nobody-here"])
        after = wait_ended(api, follower["id"])
    finally:
        worker.stop()
    assert after["state"] == "failed"
    assert after["reason"].startswith("the dataset is empty")
    cancelled = found(api, hung["id"])
    assert (cancelled["state"], cancelled["result_version"]) == ("cancelled", None)


def test_a_lease_lost_to_another_worker_ends_the_training(api: TestClient, agent_id: str) -> None:
    taken = job(api, [agent_id])
    worker = hanging_worker(api)
    worker.start()
    try:
        wait_training(api, taken["id"])
        # The lease runs out (as if the worker had been cut off) and another worker claims it.
        with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
            later = utcnow() + timedelta(days=2)
            assert jobs.requeue_expired(session, now=later, max_attempts=MAX_ATTEMPTS) == 1
            thief = jobs.claim(session, worker="thief", lease=timedelta(hours=1))
        assert thief is not None
        assert thief[0] == taken["id"]
        follower = job(api, ["nobody-here"])
        after = wait_ended(api, follower["id"])
    finally:
        worker.stop()
    assert after["state"] == "failed"
    now = found(api, taken["id"])
    assert (now["state"], now["worker"], now["attempts"]) == ("running", "thief", 2)
    assert not any("evaluating" in line for line in now["logs"])


def test_a_stopping_worker_ends_its_training_and_queues_the_job_again(
    api: TestClient, agent_id: str
) -> None:
    hung = job(api, [agent_id])
    worker = hanging_worker(api)
    worker.start()
    wait_training(api, hung["id"])

    stopping = threading.Thread(target=worker.stop)
    stopping.start()
    stopping.join(WAIT_S)

    assert not stopping.is_alive(), "the worker waited for the training"
    again = found(api, hung["id"])
    assert (again["state"], again["worker"], again["attempts"]) == ("queued", None, 0)
    assert again["reason"] == "its worker stopped; queued again"
    assert again["progress"] == 0.0


def test_a_trainer_killed_out_of_memory_fails_its_job_and_the_worker_goes_on(
    api: TestClient, agent_id: str
) -> None:
    worker = worker_of(api, child_setup=dying_trainer)
    killed = job(api, [agent_id])
    assert worker.run_once() == killed["id"]
    dead = found(api, killed["id"])
    assert dead["state"] == "failed"
    assert dead["reason"] == "the training process died: killed by SIGKILL (out of memory?)"

    follower = job(api, ["nobody-here"])
    assert worker.run_once() == follower["id"]
    assert found(api, follower["id"])["reason"].startswith("the dataset is empty")


@pytest.mark.slow  # 8 s a database: the lease has to outlast a child's start
def test_a_worker_that_cannot_renew_the_lease_ends_the_training_before_it_runs_out(
    api: TestClient, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database does not answer the worker's renewals (the child, in its own process,
    still wrote its steps): the worker ends the training before another may take the job."""
    hung = job(api, [agent_id])
    # Long enough for the child to start and log its first step on a loaded machine (CI saw
    # a 3 s lease, given up after 2.6 s, end the child before its imports were done).
    context = replace(worker_of(api)._context, lease=timedelta(seconds=8))
    worker = TrainingWorker(context, check_s=0.2, child_setup=hanging_trainer)

    def unanswered(*_: object, **__: object) -> bool:
        raise OperationalError("SELECT", {}, Exception("the database is away"))

    monkeypatch.setattr(jobs, "report", unanswered)  # in this process: the worker's renewals
    assert worker.run_once() == hung["id"]  # it returns: the training was ended

    now = found(api, hung["id"])
    assert now["state"] == "running"  # until another worker finds the lease expired
    assert any("training on" in line for line in now["logs"])
    assert not any("evaluating" in line for line in now["logs"])
