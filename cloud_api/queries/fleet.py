"""Counts over the fleet for the metrics gauges, read at scrape time."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud_api.tables import DeploymentRow


def deployments_by_state(session: Session) -> dict[str, int]:
    """How many deployments are in each state (states with none are absent)."""
    query = select(DeploymentRow.state, func.count()).group_by(DeploymentRow.state)
    return {state: count for state, count in session.execute(query)}
