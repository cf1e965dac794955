"""Deployments and their agents, as the API lists them and the rollout worker reads them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.deployment_schemas import ActiveDeploymentState
from cloud_api.tables import DeploymentAgentRow, DeploymentRow


def list_deployments(
    session: Session, *, state: str | None = None, limit: int
) -> Sequence[DeploymentRow]:
    """Deployments newest first, optionally in one state."""
    query = select(DeploymentRow)
    if state is not None:
        query = query.where(DeploymentRow.state == state)
    return session.scalars(query.order_by(DeploymentRow.id.desc()).limit(limit)).all()


def get_deployment(session: Session, *, deployment_id: int) -> DeploymentRow | None:
    """One deployment, or None."""
    return session.get(DeploymentRow, deployment_id)


def active_deployments(session: Session) -> Sequence[DeploymentRow]:
    """Deployments still moving (canary or rolling), oldest first."""
    query = select(DeploymentRow).where(DeploymentRow.state.in_(get_args(ActiveDeploymentState)))
    return session.scalars(query.order_by(DeploymentRow.id)).all()


def active_deployment_for_pipeline(session: Session, *, pipeline: str) -> DeploymentRow | None:
    """The deployment still moving on ``pipeline``, if there is one."""
    query = select(DeploymentRow).where(
        DeploymentRow.pipeline == pipeline,
        DeploymentRow.state.in_(get_args(ActiveDeploymentState)),
    )
    return session.scalars(query.limit(1)).first()


def deployment_agents(
    session: Session, *, deployment_ids: Sequence[int]
) -> Sequence[DeploymentAgentRow]:
    """The agents of some deployments, canary first, then by agent id."""
    query = (
        select(DeploymentAgentRow)
        .where(DeploymentAgentRow.deployment_id.in_(deployment_ids))
        .order_by(
            DeploymentAgentRow.deployment_id,
            DeploymentAgentRow.phase,  # "canary" < "rest"
            DeploymentAgentRow.agent_id,
        )
    )
    return session.scalars(query).all()
