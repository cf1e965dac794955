"""``/api/v1/agents``: what each agent runs and whether it is online (and why not)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from cloud_api import crud
from cloud_api.deps import ReadDep, ReadOrAgentDep, SessionDep, SettingsDep
from cloud_api.params import AgentIdPath
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import AgentOut
from shared.messages import utcnow

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], responses=problems(*AUTHENTICATED))


@router.get("", response_model=list[AgentOut])
def list_agents(session: SessionDep, settings: SettingsDep, _: ReadDep) -> list[AgentOut]:
    """Every agent that reported a status or was enrolled."""
    now = utcnow()
    return [
        crud.describe_agent(row, now=now, grace=settings.heartbeat_grace)
        for row in crud.list_agents(session)
    ]


@router.get("/{agent_id}", response_model=AgentOut, responses=problems(404, 422))
def get_agent(
    agent_id: AgentIdPath, session: SessionDep, settings: SettingsDep, principal: ReadOrAgentDep
) -> AgentOut:
    """One agent; 404 if it never reported a status. An agent may read its own record."""
    principal.check_agent(agent_id)
    row = crud.get_agent(session, agent_id=agent_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"agent {agent_id!r} has never reported")
    return crud.describe_agent(row, now=utcnow(), grace=settings.heartbeat_grace)
