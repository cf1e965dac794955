"""Agents' remote configuration: ``/api/v1/agents/{id}/config`` for one agent,
``/api/v1/agent-configs`` for a fleet (ids or a label selector, as deployments target agents).

A PUT stores the overlay under a new version; the rollout worker publishes it, retained, on
each agent's ``config`` topic (``cloud_api.rollout.worker``). The agent validates it against
its own configuration and reports it applied or refused (with the reason) in its status,
which ingest stores: a GET shows both, desired and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloud_api.config_schemas import (
    AgentConfigIn,
    AgentConfigOut,
    AgentConfigPage,
    DesiredConfigOut,
    FleetConfigIn,
    ReportedConfigOut,
)
from cloud_api.cursors import AgentPosition, cursor_param, keyset_page
from cloud_api.deps import OperateDep, ReadDep, ReadOrAgentDep, SessionDep
from cloud_api.limits import Limit, body_limit
from cloud_api.params import AgentIdPath
from cloud_api.params import Limit as PageLimit
from cloud_api.queries import agent_config, agents
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.tables import AgentConfigRow, AgentRow
from shared.messages import utcnow

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=problems(*AUTHENTICATED, 422))

FLEET_BODY_LIMIT = Limit(
    1024 * 1024 + 64 * 1024, "a target of 10,000 agent ids of 64 characters and an overlay"
)
"""FleetConfigIn's largest valid body fits; the 64 KiB of other JSON routes would not."""

AfterDep = Annotated[AgentPosition | None, Depends(cursor_param(AgentPosition))]


@router.get("/agents/{agent_id}/config", response_model=AgentConfigOut, responses=problems(404))
def get_agent_config(
    agent_id: AgentIdPath, session: SessionDep, principal: ReadOrAgentDep
) -> AgentConfigOut:
    """The overlay set for one agent and what it reported; an agent may read its own."""
    principal.check_agent(agent_id)
    row = agents.get_agent(session, agent_id=agent_id)
    desired = agent_config.get_config(session, agent_id=agent_id)
    if row is None and desired is None:
        raise HTTPException(404, f"agent {agent_id!r} is unknown (never enrolled or reported)")
    return _out(agent_id, desired, row)


@router.put(
    "/agents/{agent_id}/config",
    response_model=AgentConfigOut,
    responses=problems(400, 404, 409, 413),
)
def put_agent_config(
    agent_id: AgentIdPath, body: AgentConfigIn, session: SessionDep, _: OperateDep
) -> AgentConfigOut:
    """Set one agent's whole remote configuration (a new version); 404 for an unknown agent."""
    row = agents.get_agent(session, agent_id=agent_id)
    if row is None:
        raise HTTPException(404, f"agent {agent_id!r} is unknown (never enrolled or reported)")
    (desired,) = _set(session, [agent_id], body.overlay)
    return _out(agent_id, desired, row)


@router.get("/agent-configs", response_model=AgentConfigPage, responses=problems(400))
def list_agent_configs(
    session: SessionDep,
    _: ReadDep,
    after: AfterDep,
    configured: Annotated[
        bool, Query(description="only agents with an overlay set (not those on their file only)")
    ] = False,
    limit: PageLimit = 100,
) -> AgentConfigPage:
    """Known agents' remote configurations, desired and reported, by agent id; follow
    ``next_cursor`` until it is null. Only the agents of the page are read."""
    ids = agent_config.agent_ids_page(
        session, after=after.id if after is not None else None, limit=limit + 1,
        configured=configured,
    )  # fmt: skip
    page, next_cursor = keyset_page(ids, limit, lambda agent_id: AgentPosition(id=agent_id))
    rows = agents.agents_by_id(session, agent_ids=page)
    desired = agent_config.configs(session, agent_ids=page)
    items = [_out(a, desired.get(a), rows.get(a)) for a in page]
    return AgentConfigPage(items=items, next_cursor=next_cursor)


@router.put(
    "/agent-configs",
    response_model=list[AgentConfigOut],
    dependencies=[Depends(body_limit(lambda _: FLEET_BODY_LIMIT))],
    responses=problems(400, 409, 413),
)
def put_fleet_config(
    body: FleetConfigIn, session: SessionDep, _: OperateDep
) -> list[AgentConfigOut]:
    """Set one overlay for every known agent the target names (ids, or every key=value of
    a label selector), each under its own new version; 422 if it names no known agent."""
    target = body.target
    chosen = agent_config.target_agent_ids(
        session, agent_ids=target.agent_ids, labels=target.labels
    )
    if not chosen:
        raise HTTPException(422, "the target matches no known agent")
    rows = agents.agents_by_id(session, agent_ids=chosen)
    desired = _set(session, chosen, body.overlay)
    return [_out(row.agent_id, row, rows[row.agent_id]) for row in desired]


def _set(
    session: Session, agent_ids: Sequence[str], overlay: dict[str, object]
) -> list[AgentConfigRow]:
    try:
        rows = agent_config.set_config(session, agent_ids=agent_ids, overlay=overlay, now=utcnow())
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        if not agent_config.is_conflict(exc):
            raise
        raise HTTPException(409, "the configuration changed at the same time; try again") from None
    return rows


def _out(agent_id: str, desired: AgentConfigRow | None, row: AgentRow | None) -> AgentConfigOut:
    reported = agent_config.reported_config(row.last_status) if row is not None else None
    return AgentConfigOut(
        agent_id=agent_id,
        state=agent_config.config_state(desired, reported),
        desired=(
            DesiredConfigOut(
                version=desired.version, overlay=desired.overlay, updated_at=desired.updated_at
            )
            if desired is not None
            else None
        ),
        reported=(
            ReportedConfigOut.model_validate(reported.model_dump())
            if reported is not None
            else None
        ),
    )
