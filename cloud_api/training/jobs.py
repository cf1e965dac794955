"""The job queue in SQL: create, claim, report, finish, release, cancel, and re-queue a dead
worker's job.

A worker claims the oldest queued job by writing its own random ``claim_token`` and a lease:
on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` (workers never wait on each other's
row), on SQLite with one conditional UPDATE (SQLite runs one writer at a time, so the
statement is the claim). Every later write of the worker names its token and the running
state: a job cancelled meanwhile, or re-queued after the lease ran out, ignores the writes of
the worker that lost it. A job whose worker died goes back to the queue when its lease has
expired, at most ``max_attempts`` times; a worker that stops releases its job at once. A job
is queued only if its candidate version could be registered (``check_registrable``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud_api import registry
from cloud_api.queries.models import get_model_version
from cloud_api.training.spec import FINISHED, JobSpec, JobState
from cloud_api.training.tables import LOG_LINE_CHARS, LOG_LINES, TrainingJobRow
from shared.errors import AiotError, ConflictError
from shared.messages import utcnow

log = logging.getLogger(__name__)


def create_job(session: Session, spec: JobSpec, *, created_by: str) -> TrainingJobRow:
    """Queue a job (committed); nothing is queued if its candidate could never be registered
    (``check_registrable``)."""
    row = TrainingJobRow(
        pipeline=spec.pipeline,
        trainer=spec.trainer,
        base_model=spec.base_model,
        base_version=spec.base_version,
        selector=spec.selector.model_dump(mode="json"),
        options={"trainer": spec.options, "version": spec.version},
        gate=spec.gate.model_dump(mode="json"),
        state="queued",
        progress=0.0,
        logs=[],
        reason="",
        created_by=created_by,
        attempts=0,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()  # the id names the default version
    try:
        check_registrable(session, spec, job_id=row.id)
    except AiotError:
        session.rollback()
        raise
    session.commit()
    log.info("queued training job %s (%s on %s)", row.id, spec.trainer, spec.pipeline)
    return row


def check_registrable(session: Session, spec: JobSpec, *, job_id: int) -> None:
    """ContractError for a candidate version that is not a valid name (a default one over 64
    characters); ConflictError for one that is registered or another live job's."""
    version = registry.check_name(spec.version_of(job_id), what="candidate version")
    if get_model_version(session, name=spec.base_model, version=version) is not None:
        raise ConflictError(f"model {spec.base_model} version {version} is registered already")
    live = session.scalars(
        select(TrainingJobRow).where(
            TrainingJobRow.base_model == spec.base_model,
            TrainingJobRow.state.in_(("queued", "running")),
            TrainingJobRow.id != job_id,
        )
    )
    for other in live:
        if spec_of(other).version_of(other.id) == version:
            raise ConflictError(
                f"model {spec.base_model} version {version} is the candidate of training job "
                f"{other.id} ({other.state})"
            )


def spec_of(row: TrainingJobRow) -> JobSpec:
    """The job as it was asked for."""
    return JobSpec.model_validate(
        {
            "pipeline": row.pipeline,
            "trainer": row.trainer,
            "base_model": row.base_model,
            "base_version": row.base_version,
            "version": row.options.get("version"),
            "selector": row.selector,
            "options": row.options.get("trainer", {}),
            "gate": row.gate,
        }
    )


def list_jobs(session: Session, *, state: JobState | None, limit: int) -> Sequence[TrainingJobRow]:
    """Jobs newest first."""
    query = select(TrainingJobRow).order_by(TrainingJobRow.id.desc()).limit(limit)
    if state is not None:
        query = query.where(TrainingJobRow.state == state)
    return session.scalars(query).all()


def get_job(session: Session, job_id: int) -> TrainingJobRow | None:
    """One job, or None."""
    return session.get(TrainingJobRow, job_id)


def claim(session: Session, *, worker: str, lease: timedelta) -> tuple[int, str] | None:
    """Claim the oldest queued job for ``worker``: (job id, claim token), or None."""
    token = secrets.token_hex(16)
    now = utcnow()
    values: dict[str, Any] = {
        "state": "running",
        "claim_token": token,
        "worker": worker[:128],
        "lease_until": now + lease,
        "attempts": TrainingJobRow.attempts + 1,
        "started_at": now,
    }
    oldest = select(TrainingJobRow.id).where(TrainingJobRow.state == "queued")
    oldest = oldest.order_by(TrainingJobRow.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        job_id = session.scalar(oldest.with_for_update(skip_locked=True))
        if job_id is None:
            session.rollback()
            return None
        session.execute(update(TrainingJobRow).where(TrainingJobRow.id == job_id).values(values))
    else:
        session.execute(
            update(TrainingJobRow)
            .where(TrainingJobRow.id == oldest.scalar_subquery(), TrainingJobRow.state == "queued")
            .values(values)
        )
        job_id = session.scalar(
            select(TrainingJobRow.id).where(TrainingJobRow.claim_token == token)
        )
        if job_id is None:
            session.rollback()
            return None
    session.commit()
    log.info("worker %s claimed training job %s", worker, job_id)
    return int(job_id), token


def _mine(job_id: int, token: str) -> Any:
    return (
        TrainingJobRow.id == job_id,
        TrainingJobRow.claim_token == token,
        TrainingJobRow.state == "running",
    )


def report(
    session: Session,
    job_id: int,
    token: str,
    *,
    lease: timedelta,
    progress: float | None = None,
    line: str | None = None,
) -> bool:
    """Renew the lease, and record progress and a log line; False if the job is no longer
    this worker's (cancelled, or re-queued after its lease expired)."""
    row = session.scalar(select(TrainingJobRow).where(*_mine(job_id, token)).with_for_update())
    if row is None:
        session.rollback()
        return False
    row.lease_until = utcnow() + lease
    if progress is not None:
        row.progress = round(min(max(progress, 0.0), 1.0), 4)
    if line is not None:
        stamped = f"{utcnow().isoformat(timespec='seconds')} {line}"[:LOG_LINE_CHARS]
        row.logs = [*row.logs, stamped][-LOG_LINES:]
    session.commit()
    return True


def finish(
    session: Session,
    job_id: int,
    token: str,
    *,
    state: JobState,
    reason: str,
    commit: bool = True,
    **values: Any,
) -> bool:
    """Set the job's final ``state`` and ``reason`` if it is still this worker's; with
    ``commit=False`` the caller commits (a registration in the same transaction)."""
    assert state in FINISHED
    result = session.execute(
        update(TrainingJobRow)
        .where(*_mine(job_id, token))
        .values(
            state=state,
            reason=reason[:4000],
            progress=1.0,
            finished_at=utcnow(),
            lease_until=None,
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    if commit:
        session.commit()
    log.info("training job %s %s: %s", job_id, state, reason)
    return True


def release(session: Session, job_id: int, token: str, *, reason: str) -> bool:
    """Put this worker's running job back in the queue with ``reason`` (the worker stops); the
    attempt is not counted against the job. False if the job is no longer this worker's."""
    result = session.execute(
        update(TrainingJobRow)
        .where(*_mine(job_id, token))
        .values(
            state="queued",
            claim_token=None,
            worker=None,
            lease_until=None,
            progress=0.0,
            reason=reason,
            attempts=TrainingJobRow.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    released = result.rowcount == 1  # type: ignore[attr-defined]
    if released:
        log.info("training job %s queued again: %s", job_id, reason)
    return bool(released)


def cancel(session: Session, job_id: int) -> TrainingJobRow | None:
    """Cancel a queued or running job (a running job's worker ends its training when it next
    renews the lease);
    the job as it is now, or None if there is no such job. A finished job is left as it is."""
    session.execute(
        update(TrainingJobRow)
        .where(TrainingJobRow.id == job_id, TrainingJobRow.state.in_(("queued", "running")))
        .values(
            state="cancelled",
            reason="cancelled by request",
            finished_at=utcnow(),
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    row = session.get(TrainingJobRow, job_id)
    if row is not None:
        session.refresh(row)
    return row


def requeue_expired(session: Session, *, now: datetime, max_attempts: int) -> int:
    """Put running jobs whose lease expired back in the queue (their worker died), or fail
    those that used up ``max_attempts``; how many were re-queued or failed."""
    expired = (TrainingJobRow.state == "running", TrainingJobRow.lease_until < now)
    failed = session.execute(
        update(TrainingJobRow)
        .where(*expired, TrainingJobRow.attempts >= max_attempts)
        .values(
            state="failed",
            reason=f"its worker stopped reporting {max_attempts} times (lease expired)",
            finished_at=now,
            lease_until=None,
            claim_token=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    requeued = session.execute(
        update(TrainingJobRow)
        .where(*expired)
        .values(state="queued", claim_token=None, worker=None, lease_until=None, progress=0.0)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    if failed or requeued:
        log.warning(
            "training jobs with an expired lease: %s re-queued, %s failed", requeued, failed
        )
    return int(failed) + int(requeued)
