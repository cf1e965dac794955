"""Agents as they last reported (whether they are online is ``cloud_api.liveness``'s call)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.tables import AgentRow


def list_agents(session: Session) -> Sequence[AgentRow]:
    """Every agent that ever reported a status, by id."""
    return session.scalars(select(AgentRow).order_by(AgentRow.agent_id)).all()


def get_agent(session: Session, *, agent_id: str) -> AgentRow | None:
    """One agent, or None if it never reported."""
    return session.get(AgentRow, agent_id)


def agents_by_id(session: Session, *, agent_ids: Sequence[str]) -> dict[str, AgentRow]:
    """The agents among ``agent_ids`` that ever reported, by id."""
    rows = session.scalars(select(AgentRow).where(AgentRow.agent_id.in_(agent_ids)))
    return {row.agent_id: row for row in rows}
