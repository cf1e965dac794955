"""``/api/v1/deployments/{id}/shadow``: a shadow deployment's report, and the operator's word on
it (promote into a canary of the same version, or discard).

The rollout worker (``cloud_api.rollout.shadow_store``) asks the agents, keeps their reports and
applies the deployment's ``promote_if`` rule when the window ends; these routes show the figures
and let an operator decide instead (at any time while the deployment is in ``shadow``).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from cloud_api.deployment_schemas import DeploymentStrategy
from cloud_api.deps import OperateDep, ReadDep, SessionDep
from cloud_api.params import Id64Path
from cloud_api.queries import deployments
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.rollout import shadow_store
from cloud_api.rollout.shadow import describe, figures
from cloud_api.rollout.store import exclude_ticks
from cloud_api.shadow_schemas import ShadowAgentOut, ShadowOut
from cloud_api.tables import DeploymentRow
from shared.errors import ConflictError
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], responses=problems(*AUTHENTICATED, 422)
)


@router.get("/{deployment_id}/shadow", response_model=ShadowOut, responses=problems(404))
def get_shadow(deployment_id: Id64Path, session: SessionDep, _: ReadDep) -> ShadowOut:
    """The shadow report: figures over every agent that reported, and each agent's own.
    404 for a deployment that is not a shadow deployment."""
    return _out(session, _row(session, deployment_id))


@router.post(
    "/{deployment_id}/shadow/promote", response_model=ShadowOut, responses=problems(404, 409)
)
def promote_shadow(deployment_id: Id64Path, session: SessionDep, _: OperateDep) -> ShadowOut:
    """Withdraw the candidate from shadow and start a canary of the same version (409 once the
    deployment left ``shadow``)."""
    return _decide(session, deployment_id, promote=True)


@router.post(
    "/{deployment_id}/shadow/discard", response_model=ShadowOut, responses=problems(404, 409)
)
def discard_shadow(deployment_id: Id64Path, session: SessionDep, _: OperateDep) -> ShadowOut:
    """Withdraw the candidate and end the deployment ``discarded`` (409 once it left
    ``shadow``)."""
    return _decide(session, deployment_id, promote=False)


def _decide(session: SessionDep, deployment_id: int, *, promote: bool) -> ShadowOut:
    row = _row(session, deployment_id)
    exclude_ticks(session)
    session.refresh(row)
    stored = shadow_store.reports(session, deployment_id=row.id)
    so_far = describe(figures([report for report, _ in stored.values()]))
    now = utcnow()
    try:
        if promote:
            shadow_store.promote(
                session, row=row, now=now, reason=f"promoted by an operator: {so_far}"
            )
        else:
            shadow_store.discard(
                session, row=row, now=now, reason=f"discarded by an operator: {so_far}"
            )
    except ConflictError as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return _out(session, row)


def _row(session: SessionDep, deployment_id: int) -> DeploymentRow:
    row = deployments.get_deployment(session, deployment_id=deployment_id)
    if row is None:
        raise HTTPException(404, f"deployment {deployment_id} does not exist")
    if DeploymentStrategy.model_validate(row.strategy).kind != "shadow":
        raise HTTPException(404, f"deployment {deployment_id} is not a shadow deployment")
    return row


def _out(session: SessionDep, row: DeploymentRow) -> ShadowOut:
    stored = shadow_store.reports(session, deployment_id=row.id)
    agents = deployments.deployment_agents(session, deployment_ids=[row.id])
    by_agent = {a.agent_id: a for a in agents}
    return ShadowOut(
        deployment_id=row.id,
        state=row.state,
        reason=row.reason,
        strategy=shadow_store.shadow_strategy(row),
        figures=figures([report for report, _ in stored.values()]) if stored else None,
        agents=[
            ShadowAgentOut(
                agent_id=agent_id,
                state=report.state,
                reason=report.reason or (by_agent[agent_id].reason if agent_id in by_agent else ""),
                started_at=report.started_at,
                updated_at=updated_at,
                figures=figures([report]),
            )
            for agent_id, (report, updated_at) in sorted(stored.items())
        ],
    )
