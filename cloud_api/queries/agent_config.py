"""Agents' remote configurations in SQL: set an overlay, read it, and what to publish.

A row holds exactly what the rollout worker publishes, retained, on the agent's ``config``
topic (``message``); every change gives it a new ``version`` and ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select, union
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cloud_api.tables import AgentConfigRow, AgentRow
from shared.messages import ConfigOverlay, ConfigStatus

ConfigState = Literal["none", "pending", "applied", "refused"]
"""``none``: no overlay set; ``pending``: not reported yet; then applied or refused."""


def get_config(session: Session, *, agent_id: str) -> AgentConfigRow | None:
    """The overlay last set for one agent (None: it runs its file only)."""
    return session.get(AgentConfigRow, agent_id)


def configs(
    session: Session, *, agent_ids: Sequence[str] | None = None
) -> dict[str, AgentConfigRow]:
    """The overlays set for the agents among ``agent_ids`` (every agent's with None), by id."""
    query = select(AgentConfigRow)
    if agent_ids is not None:
        query = query.where(AgentConfigRow.agent_id.in_(agent_ids))
    return {row.agent_id: row for row in session.scalars(query)}


def agent_ids_page(
    session: Session, *, after: str | None, limit: int, configured: bool
) -> list[str]:
    """Up to ``limit`` agent ids after ``after``, ascending: agents that reported or have an
    overlay set (only those with an overlay when ``configured``)."""
    ids = select(AgentConfigRow.agent_id.label("agent_id"))
    source = ids if configured else union(select(AgentRow.agent_id.label("agent_id")), ids)
    known = source.subquery()
    query = select(known.c.agent_id)
    if after is not None:
        query = query.where(known.c.agent_id > after)
    return list(session.scalars(query.order_by(known.c.agent_id).limit(limit)))


def target_agent_ids(
    session: Session, *, agent_ids: Sequence[str] | None, labels: dict[str, str] | None
) -> list[str]:
    """The known agents a target names, ascending: those of ``agent_ids`` that reported, or
    those with every key=value of ``labels`` (the rule of ``rollout.store.matching_agents``,
    asked of the database so that only the chosen agents are read)."""
    query = select(AgentRow.agent_id)
    if agent_ids is not None:
        query = query.where(AgentRow.agent_id.in_(agent_ids))
    for key, value in (labels or {}).items():
        query = query.where(AgentRow.labels[key].as_string() == value)
    return list(session.scalars(query.order_by(AgentRow.agent_id)))


def set_config(
    session: Session, *, agent_ids: Sequence[str], overlay: dict[str, Any], now: datetime
) -> list[AgentConfigRow]:
    """Give each agent ``overlay`` (an ``OverlayJson``) as its whole remote configuration,
    under a new version.

    The version is the mapper's ``version_id_col``: a new row gets 1, and each UPDATE checks
    the version it read and bumps it. A concurrent writer of the same agent makes the flush
    or commit fail (``StaleDataError``, a duplicate key, or SQLite's busy snapshot) rather
    than hand out one version twice.
    """
    rows = configs(session, agent_ids=agent_ids)
    out = []
    for agent_id in agent_ids:
        row = rows.get(agent_id)
        if row is None:
            row = AgentConfigRow(agent_id=agent_id)
            session.add(row)
        row.overlay = overlay
        row.updated_at = now
        out.append(row)
    session.flush()
    return out


def is_conflict(exc: Exception) -> bool:
    """Whether ``exc`` is a concurrent writer of the same agents' configuration: a version
    another writer bumped first, a row it inserted first, or SQLite refusing a write from a
    transaction whose snapshot another writer has moved past."""
    if isinstance(exc, StaleDataError | IntegrityError):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def config_versions(session: Session) -> list[tuple[str, datetime]]:
    """When each agent's overlay was issued: what the broker should hold retained."""
    query = select(AgentConfigRow.agent_id, AgentConfigRow.updated_at)
    return [(agent_id, issued_at) for agent_id, issued_at in session.execute(query)]


def message(row: AgentConfigRow) -> ConfigOverlay:
    """The retained message for ``row``."""
    return ConfigOverlay(
        agent_id=row.agent_id, version=row.version, issued_at=row.updated_at, overlay=row.overlay
    )


def reported_config(last_status: dict[str, Any]) -> ConfigStatus | None:
    """What an agent last reported of its remote configuration (None: nothing, or an agent
    that predates it)."""
    reported = last_status.get("config")
    if not isinstance(reported, dict):
        return None
    try:
        return ConfigStatus.model_validate(reported)
    except ValidationError:  # ingest validated it; a row edited by hand shows as nothing
        return None


def config_state(desired: AgentConfigRow | None, reported: ConfigStatus | None) -> ConfigState:
    """Whether the agent runs the overlay set for it, refused it, or has not said yet."""
    if desired is None:
        return "none"
    if reported is not None and reported.applied_version == desired.version:
        return "applied"
    if reported is not None and reported.desired_version == desired.version and reported.refused:
        return "refused"
    return "pending"
