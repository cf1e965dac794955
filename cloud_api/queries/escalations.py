"""Escalations and cloud models in SQL: the stored answer of an id, the cloud model of a
pipeline, keyset pages, and the fleet figures per agent and pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select, tuple_
from sqlalchemy.orm import Session

from cloud_api.tables import AgentRow, CloudModelRow, EscalationRow


def get_cloud_model(session: Session, pipeline: str) -> CloudModelRow | None:
    """The cloud model of ``pipeline``, or None when it has none."""
    return session.get(CloudModelRow, pipeline)


def list_cloud_models(session: Session) -> Sequence[CloudModelRow]:
    """Every pipeline's cloud model, by pipeline."""
    return session.scalars(select(CloudModelRow).order_by(CloudModelRow.pipeline)).all()


def set_cloud_model(session: Session, row: CloudModelRow) -> CloudModelRow:
    """Make ``row`` its pipeline's cloud model, replacing any other (not committed)."""
    return session.merge(row)


def get_escalation(session: Session, escalation_id: str) -> EscalationRow | None:
    """One stored escalation, or None."""
    return session.get(EscalationRow, escalation_id)


def escalations_page_query(
    *,
    agent_id: str | None = None,
    pipeline: str | None = None,
    outcome: str | None = None,
    agree: bool | None = None,
    since: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> Select[EscalationRow]:
    """Escalations newest answer first on (answered_at, id), with optional filters."""
    wanted = (
        (EscalationRow.agent_id, agent_id),
        (EscalationRow.pipeline, pipeline),
        (EscalationRow.outcome, outcome),
        (EscalationRow.agree, agree),
    )
    query = select(EscalationRow).where(
        *[col == value for col, value in wanted if value is not None]
    )
    if since is not None:
        query = query.where(EscalationRow.answered_at >= since)
    if after is not None:
        query = query.where(tuple_(EscalationRow.answered_at, EscalationRow.id) < tuple_(*after))
    order = (EscalationRow.answered_at.desc(), EscalationRow.id.desc())
    return query.order_by(*order).limit(limit)


@dataclass(frozen=True, slots=True)
class PipelineFigures:
    """What one agent's pipeline escalated since a time, and how the cloud answered."""

    agent_id: str
    pipeline: str
    escalations: int
    answered: int
    refused: int
    agreed: int
    first: datetime | None
    last: datetime | None


def escalation_figures(
    session: Session, *, since: datetime, agent_id: str | None = None
) -> list[PipelineFigures]:
    """Counts per (agent, pipeline) of escalations answered at or after ``since``."""
    answered = func.sum(case((EscalationRow.outcome == "answered", 1), else_=0))
    refused = func.sum(case((EscalationRow.outcome == "refused", 1), else_=0))
    agreed = func.sum(case((EscalationRow.agree.is_(True), 1), else_=0))
    query = (
        select(
            EscalationRow.agent_id,
            EscalationRow.pipeline,
            func.count(),
            answered,
            refused,
            agreed,
            func.min(EscalationRow.ts),
            func.max(EscalationRow.ts),
        )
        .where(EscalationRow.answered_at >= since)
        .group_by(EscalationRow.agent_id, EscalationRow.pipeline)
        .order_by(EscalationRow.agent_id, EscalationRow.pipeline)
    )
    if agent_id is not None:
        query = query.where(EscalationRow.agent_id == agent_id)
    return [
        PipelineFigures(
            agent_id=row[0],
            pipeline=row[1],
            escalations=int(row[2]),
            answered=int(row[3] or 0),
            refused=int(row[4] or 0),
            agreed=int(row[5] or 0),
            first=row[6],
            last=row[7],
        )
        for row in session.execute(query)
    ]


def latest_statuses(session: Session, agent_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The last status each of these agents reported (the JSON as stored)."""
    if not agent_ids:
        return {}
    rows = session.execute(
        select(AgentRow.agent_id, AgentRow.last_status).where(AgentRow.agent_id.in_(agent_ids))
    )
    return {agent: status for agent, status in rows}
