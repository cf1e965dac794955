"""``/api/v1/agents``: what each agent runs and whether it is online (and why not)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException

from cloud_api.deps import ReadDep, ReadOrAgentDep, SessionDep, SettingsDep
from cloud_api.liveness import liveness
from cloud_api.params import AgentIdPath
from cloud_api.queries import agents
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import AgentOut, PipelineOut
from cloud_api.tables import AgentRow
from shared.messages import utcnow

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], responses=problems(*AUTHENTICATED))


@router.get("", response_model=list[AgentOut])
def list_agents(session: SessionDep, settings: SettingsDep, _: ReadDep) -> list[AgentOut]:
    """Every agent that reported a status or was enrolled."""
    now = utcnow()
    return [
        agent_out(row, now=now, grace=settings.heartbeat_grace)
        for row in agents.list_agents(session)
    ]


@router.get("/{agent_id}", response_model=AgentOut, responses=problems(404, 422))
def get_agent(
    agent_id: AgentIdPath, session: SessionDep, settings: SettingsDep, principal: ReadOrAgentDep
) -> AgentOut:
    """One agent; 404 if it never reported a status. An agent may read its own record."""
    principal.check_agent(agent_id)
    row = agents.get_agent(session, agent_id=agent_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"agent {agent_id!r} has never reported")
    return agent_out(row, now=utcnow(), grace=settings.heartbeat_grace)


def agent_out(row: AgentRow, *, now: datetime, grace: float) -> AgentOut:
    """What an operator wants to know: is it online, and if not, why; and what it runs."""
    status: dict[str, Any] = row.last_status
    judged = liveness(row, now=now, grace=grace)
    return AgentOut(
        agent_id=row.agent_id,
        state=judged.state,
        reason=judged.reason,
        last_seen=row.last_seen,
        heartbeat_s=row.heartbeat_s,
        status_ts=status.get("ts"),
        agent_version=status.get("agent_version", ""),
        uptime_s=status.get("uptime_s", 0.0),
        outbox_depth=status.get("outbox_depth", 0),
        outbox_oldest_age_s=status.get("outbox_oldest_age_s", 0.0),
        pipelines=[PipelineOut.model_validate(p) for p in status.get("pipelines", [])],
    )
