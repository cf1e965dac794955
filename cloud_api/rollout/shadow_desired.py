"""Shadow entries in agents' desired states: asking agents to run a candidate in shadow, and
withdrawing it. A leaf of the rollout package (``store`` withdraws the shadows of a cancelled
deployment with it; ``shadow_store`` asks and withdraws as windows start and end).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.rollout.desired import as_json
from cloud_api.tables import DesiredStateRow
from shared.messages import DesiredShadow, DesiredState


def with_shadow(
    state: DesiredState | None, *, agent_id: str, pipeline: str, shadow: DesiredShadow | None,
    issued_at: datetime,
) -> DesiredState:  # fmt: skip
    """An agent's whole desired state with ``pipeline``'s shadow replaced (or removed)."""
    shadows = [s for s in (state.shadows if state else []) if s.model.pipeline != pipeline]
    if shadow is not None:
        shadows.append(shadow)
    shadows.sort(key=lambda s: s.model.pipeline)
    pipelines = state.pipelines if state else []
    return DesiredState(
        agent_id=agent_id, issued_at=issued_at, pipelines=pipelines, shadows=shadows
    )


def set_shadow(
    session: Session, *, agent_ids: Sequence[str], pipeline: str, shadow: DesiredShadow | None,
    now: datetime,
) -> None:  # fmt: skip
    """Write each agent's desired state with ``pipeline``'s shadow set (None: withdrawn),
    issued ``now``; the rollout worker publishes it. Agents whose state would not change are
    left as they are."""
    query = select(DesiredStateRow).where(DesiredStateRow.agent_id.in_(agent_ids))
    rows = {row.agent_id: row for row in session.scalars(query)}
    for agent_id in agent_ids:
        row = rows.get(agent_id)
        before = DesiredState.model_validate(row.payload) if row is not None else None
        if shadow is None and not any(
            s.model.pipeline == pipeline for s in (before.shadows if before else [])
        ):
            continue
        state = with_shadow(
            before, agent_id=agent_id, pipeline=pipeline, shadow=shadow, issued_at=now
        )
        if row is None:
            session.add(DesiredStateRow(agent_id=agent_id, payload=as_json(state), updated_at=now))
        else:
            row.payload, row.updated_at = as_json(state), now
