"""``/api/v1/escalations``: what agents escalated and how the cloud answered, in keyset
pages, and the fleet figures per agent and pipeline (``/stats``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from cloud_api.cursors import EventPosition, cursor_param, keyset_page
from cloud_api.deps import ReadOrAgentDep, SessionDep
from cloud_api.escalation_schemas import (
    EscalationOut,
    EscalationPage,
    EscalationStats,
    Outcome,
    PipelineEscalationStats,
)
from cloud_api.params import AgentIdQuery, NameQuery, SinceQuery
from cloud_api.params import Limit as PageLimit
from cloud_api.queries.escalations import (
    PipelineFigures,
    escalation_figures,
    escalations_page_query,
    latest_statuses,
)
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.tables import EscalationRow
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/escalations", tags=["escalations"], responses=problems(*AUTHENTICATED, 422)
)

AfterDep = Annotated[EventPosition | None, Depends(cursor_param(EventPosition))]
STATUS_COUNTS = ("spool_depth", "sample_bytes_uploaded", "samples_uploaded", "samples_capped")
"""What a pipeline's last status says of its collection, shown beside its escalations."""


def _out(row: EscalationRow) -> EscalationOut:
    return EscalationOut.model_validate(row, from_attributes=True)


@router.get("", response_model=EscalationPage, responses=problems(400))
def list_escalations(
    session: SessionDep,
    principal: ReadOrAgentDep,
    after: AfterDep,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    outcome: Annotated[Outcome | None, Query(description="answered or refused")] = None,
    agree: Annotated[bool | None, Query(description="edge and cloud labels agree")] = None,
    since: Annotated[SinceQuery, Query(description="answered at or after")] = None,
    limit: PageLimit = 100,
) -> EscalationPage:
    """Escalations, latest answer first; follow ``next_cursor`` until it is null. An agent
    may list its own only (it passes its own ``agent_id``)."""
    principal.check_agent(agent_id)
    query = escalations_page_query(
        agent_id=agent_id,
        pipeline=pipeline,
        outcome=outcome,
        agree=agree,
        since=since,
        after=(after.ts, after.id) if after is not None else None,
        limit=limit + 1,
    )
    rows = session.scalars(query).all()
    page, cursor = keyset_page(rows, limit, lambda r: EventPosition(ts=r.answered_at, id=r.id))
    return EscalationPage(items=[_out(row) for row in page], next_cursor=cursor)


@router.get("/stats", response_model=EscalationStats)
def escalation_stats(
    session: SessionDep,
    principal: ReadOrAgentDep,
    agent_id: AgentIdQuery = None,
    window_s: Annotated[float, Query(gt=0, le=30 * 86400, description="seconds back")] = 3600.0,
) -> EscalationStats:
    """Per agent and pipeline over the last ``window_s``: escalations, their rate, answers,
    refusals and edge/cloud agreement; and from each agent's last status its spool depth,
    samples kept and bytes uploaded and its escalation counters (budget drops, queue)."""
    principal.check_agent(agent_id)
    since = utcnow() - timedelta(seconds=window_s)
    figures = escalation_figures(session, since=since, agent_id=agent_id)
    statuses = latest_statuses(session, sorted({f.agent_id for f in figures}))
    return EscalationStats(
        since=since,
        window_s=window_s,
        pipelines=[_stats(f, window_s, statuses.get(f.agent_id)) for f in figures],
    )


def _stats(
    figures: PipelineFigures, window_s: float, status: dict[str, Any] | None
) -> PipelineEscalationStats:
    return PipelineEscalationStats(
        agent_id=figures.agent_id,
        pipeline=figures.pipeline,
        escalations=figures.escalations,
        answered=figures.answered,
        refused=figures.refused,
        agreed=figures.agreed,
        agreement=figures.agreed / figures.answered if figures.answered else None,
        rate_per_min=figures.escalations * 60.0 / window_s,
        status=_status_counts(status, figures.pipeline),
    )


def _status_counts(status: dict[str, Any] | None, pipeline: str) -> dict[str, int | dict[str, int]]:
    """The pipeline's collection and escalation counters from the agent's last status."""
    for entry in (status or {}).get("pipelines", []):
        if entry.get("name") != pipeline:
            continue
        counts: dict[str, int | dict[str, int]] = {
            key: int(value)
            for key, value in entry.items()
            if (key in STATUS_COUNTS or key.startswith("escalation"))
            and isinstance(value, int)
            and not isinstance(value, bool)
        }
        kept = entry.get("samples_kept")
        if isinstance(kept, dict):
            counts["samples_kept"] = {str(k): int(v) for k, v in kept.items() if isinstance(v, int)}
        return counts
    return {}
