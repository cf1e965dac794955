"""``/api/v1/training-jobs``: queue a training job, watch it, cancel it; and a model
version's ``lineage`` (``/api/v1/models/{name}/versions/{version}/lineage``), also reached
from an event (``/api/v1/events/{id}/lineage``: the version that produced it).

Workers (``cloud_api.training.worker``) run the jobs; these routes only create, show and
cancel them. A job's trainer and options are checked here, so a job that cannot start is a
422 now rather than a failed job later.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from cloud_api.deps import OperateDep, ReadDep, SessionDep
from cloud_api.params import Id64Path, ModelNamePath
from cloud_api.queries.models import get_model_version
from cloud_api.queries.samples import get_event
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.routes.feedback import EventIdPath
from cloud_api.training import jobs
from cloud_api.training.lineage import lineage_of
from cloud_api.training.schemas import (
    DatasetVersionOut,
    LineageDeployment,
    LineageOut,
    TrainingJobOut,
)
from cloud_api.training.spec import Gate, JobSpec, JobState, Selector
from cloud_api.training.tables import TrainingJobRow
from cloud_api.training.trainers import trainer_named
from shared.errors import ConflictError, ContractError

router = APIRouter(tags=["training"], responses=problems(*AUTHENTICATED, 422))


@router.post(
    "/api/v1/training-jobs",
    status_code=201,
    response_model=TrainingJobOut,
    responses=problems(400, 404, 409, 413),
)
def create_job(body: JobSpec, session: SessionDep, principal: OperateDep) -> TrainingJobOut:
    """Queue a job; 422 for an unknown trainer, bad options or a default candidate version
    that is not a valid name, 404 for a base version that is not registered, 409 for a
    candidate version that is registered already or another queued or running job's."""
    try:
        trainer_named(body.trainer).parse_options(body.options)
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None
    if get_model_version(session, name=body.base_model, version=body.base_version) is None:
        raise HTTPException(404, f"model {body.base_model!r} has no version {body.base_version!r}")
    try:
        return job_out(jobs.create_job(session, body, created_by=principal.name))
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/api/v1/training-jobs", response_model=list[TrainingJobOut])
def list_jobs(
    session: SessionDep,
    _: ReadDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TrainingJobOut]:
    """Jobs newest first, optionally in one state."""
    return [job_out(row) for row in jobs.list_jobs(session, state=state, limit=limit)]


@router.get(
    "/api/v1/training-jobs/{job_id}", response_model=TrainingJobOut, responses=problems(404)
)
def get_job(job_id: Id64Path, session: SessionDep, _: ReadDep) -> TrainingJobOut:
    """One job with its progress, logs (the last 200 lines), reason and report."""
    return job_out(_row(session, job_id))


@router.post(
    "/api/v1/training-jobs/{job_id}/cancel",
    response_model=TrainingJobOut,
    responses=problems(404, 409),
)
def cancel_job(job_id: Id64Path, session: SessionDep, _: OperateDep) -> TrainingJobOut:
    """Cancel a queued or running job (a running one's worker ends its training process at
    its next lease renewal, and nothing is registered); 409 once it has ended."""
    row = _row(session, job_id)
    if row.state not in ("queued", "running"):
        raise HTTPException(409, f"training job {job_id} has ended already ({row.state})")
    cancelled = jobs.cancel(session, job_id)
    assert cancelled is not None
    if cancelled.state != "cancelled":
        raise HTTPException(409, f"training job {job_id} ended meanwhile ({cancelled.state})")
    return job_out(cancelled)


@router.get(
    "/api/v1/models/{name}/versions/{version}/lineage",
    response_model=LineageOut,
    responses=problems(404),
    tags=["models"],
)
def get_lineage(
    name: ModelNamePath, version: ModelNamePath, session: SessionDep, _: ReadDep
) -> LineageOut:
    """The job, dataset version, parent version and evaluation report behind a version, its
    deployments, and the versions trained from it; 404 if it was never registered."""
    return _lineage(session, name, version)


@router.get(
    "/api/v1/events/{event_id}/lineage",
    response_model=LineageOut,
    responses=problems(404),
    tags=["events"],
)
def get_event_lineage(event_id: EventIdPath, session: SessionDep, _: ReadDep) -> LineageOut:
    """The lineage of the model version that produced an event; 404 for an unknown event, or
    one whose model version is not in the registry (an agent's own configured model)."""
    event = get_event(session, event_id)
    if event is None:
        raise HTTPException(404, f"no event {event_id}")
    return _lineage(session, event.model_name, event.model_version)


def _lineage(session: SessionDep, name: str, version: str) -> LineageOut:
    model = get_model_version(session, name=name, version=version)
    if model is None:
        raise HTTPException(404, f"model {name!r} has no version {version!r}")
    found = lineage_of(session, name=name, version=version)
    return LineageOut(
        name=name,
        version=version,
        sha256=model.sha256,
        parent_version=found.trained.parent_version if found.trained is not None else None,
        job=job_out(found.job) if found.job is not None else None,
        dataset=DatasetVersionOut.model_validate(found.dataset) if found.dataset else None,
        report=found.trained.report if found.trained is not None else None,
        deployments=[LineageDeployment.model_validate(row) for row in found.deployments],
        children=found.children,
    )


def _row(session: SessionDep, job_id: int) -> TrainingJobRow:
    row = jobs.get_job(session, job_id)
    if row is None:
        raise HTTPException(404, f"training job {job_id} does not exist")
    return row


def job_out(row: TrainingJobRow) -> TrainingJobOut:
    """A job as the API shows it."""
    return TrainingJobOut(
        id=row.id,
        pipeline=row.pipeline,
        trainer=row.trainer,
        base_model=row.base_model,
        base_version=row.base_version,
        version=row.options.get("version"),
        selector=Selector.model_validate(row.selector),
        options=row.options.get("trainer", {}),
        gate=Gate.model_validate(row.gate),
        state=row.state,
        progress=row.progress,
        reason=row.reason,
        logs=row.logs,
        created_by=row.created_by,
        worker=row.worker,
        attempts=row.attempts,
        dataset_version_id=row.dataset_version_id,
        result_version=row.result_version,
        report=row.report,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
