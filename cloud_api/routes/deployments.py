"""``/api/v1/deployments``: roll a model version out to agents, watch it, cancel it.

The rollout worker (``cloud_api.rollout.worker``) moves deployments; these routes only create,
show and cancel them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from cloud_api.deployment_schemas import (
    DeploymentAgentOut,
    DeploymentCounts,
    DeploymentIn,
    DeploymentOut,
    DeploymentState,
    DeploymentStrategy,
    DeploymentTarget,
)
from cloud_api.deps import OperateDep, ReadDep, SessionDep
from cloud_api.limits import Limit, body_limit
from cloud_api.params import Id64Path
from cloud_api.queries import deployments
from cloud_api.queries.models import get_model_version
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.rollout import store
from cloud_api.tables import DeploymentAgentRow, DeploymentRow
from shared.errors import ConflictError, ContractError
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], responses=problems(*AUTHENTICATED, 422)
)

BODY_LIMIT = Limit(1024 * 1024, "a target of 10,000 agent ids of 64 characters is ~680 KB")
"""DeploymentIn's largest valid body fits; the 64 KiB of other JSON routes would not."""


@router.post(
    "",
    status_code=201,
    response_model=DeploymentOut,
    dependencies=[Depends(body_limit(lambda _: BODY_LIMIT))],
    responses=problems(400, 404, 409, 413),
)
def create_deployment(body: DeploymentIn, session: SessionDep, _: OperateDep) -> DeploymentOut:
    """Start a deployment (state ``canary``); 404 unknown model version, 409 while another
    deployment moves on the same pipeline, 422 for a target that matches no usable agent."""
    if get_model_version(session, name=body.model, version=body.version) is None:
        raise HTTPException(404, f"model {body.model!r} has no version {body.version!r}")
    try:
        row = store.create_deployment(
            session,
            model=body.model,
            version=body.version,
            pipeline=body.pipeline,
            target=body.target,
            strategy=body.strategy,
            now=utcnow(),
        )
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None
    return _out(row, deployments.deployment_agents(session, deployment_ids=[row.id]))


@router.get("", response_model=list[DeploymentOut])
def list_deployments(
    session: SessionDep,
    _: ReadDep,
    state: DeploymentState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeploymentOut]:
    """Deployments newest first, optionally in one state."""
    rows = deployments.list_deployments(session, state=state, limit=limit)
    agents = deployments.deployment_agents(session, deployment_ids=[row.id for row in rows])
    by_deployment: dict[int, list[DeploymentAgentRow]] = {}
    for agent in agents:
        by_deployment.setdefault(agent.deployment_id, []).append(agent)
    return [_out(row, by_deployment.get(row.id, [])) for row in rows]


@router.get("/{deployment_id}", response_model=DeploymentOut, responses=problems(404))
def get_deployment(deployment_id: Id64Path, session: SessionDep, _: ReadDep) -> DeploymentOut:
    """One deployment with every agent's phase, state, running version and reason."""
    row = _row(session, deployment_id)
    return _out(row, deployments.deployment_agents(session, deployment_ids=[row.id]))


@router.post("/{deployment_id}/cancel", response_model=DeploymentOut, responses=problems(404, 409))
def cancel_deployment(deployment_id: Id64Path, session: SessionDep, _: OperateDep) -> DeploymentOut:
    """Stop moving: agents not asked yet never are; agents that were asked keep their desired
    state (this is not a rollback: deploy the previous version for that). 409 once ended."""
    row = _row(session, deployment_id)
    try:
        store.cancel_deployment(session, row=row, now=utcnow())
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(row, deployments.deployment_agents(session, deployment_ids=[row.id]))


def _row(session: SessionDep, deployment_id: int) -> DeploymentRow:
    row = deployments.get_deployment(session, deployment_id=deployment_id)
    if row is None:
        raise HTTPException(404, f"deployment {deployment_id} does not exist")
    return row


def _out(row: DeploymentRow, agents: Sequence[DeploymentAgentRow]) -> DeploymentOut:
    counts = Counter(agent.state for agent in agents)
    return DeploymentOut(
        id=row.id,
        model=row.model,
        version=row.version,
        pipeline=row.pipeline,
        state=row.state,
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        strategy=DeploymentStrategy.model_validate(row.strategy),
        target=DeploymentTarget.model_validate(row.target),
        counts=DeploymentCounts.model_validate(dict(counts)),
        agents=[DeploymentAgentOut.model_validate(agent) for agent in agents],
    )
