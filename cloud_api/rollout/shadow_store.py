"""Shadow deployments in SQL: tick them (ask agents, keep their reports, judge the window),
promote them into a canary of the same version, or discard them.

A deployment created with ``strategy.kind: shadow`` starts in state ``shadow``; the canary
machine (``machine``) leaves it alone until it is promoted, when its agents become ``pending``
again and the deployment ``canary``. Each agent's latest report for the deployment is kept in
``shadow_reports``, so the figures outlive the window (agents drop the candidate then).
Everything here runs in the caller's transaction; the rollout worker commits and publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import get_args

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.deployment_schemas import DeploymentStrategy, TargetState
from cloud_api.queries.agents import agents_by_id
from cloud_api.queries.deployments import deployment_agents
from cloud_api.queries.models import get_model_version
from cloud_api.rollout.desired import entry_for
from cloud_api.rollout.shadow import agent_state, outcome, window_over
from cloud_api.rollout.shadow_desired import set_shadow
from cloud_api.shadow_schemas import ShadowStrategy
from cloud_api.tables import AgentRow, DeploymentAgentRow, DeploymentRow, ShadowReportRow
from shared.errors import ConflictError
from shared.messages import DesiredShadow, ShadowReport
from shared.signing import SignedManifest

log = logging.getLogger(__name__)

_TARGET_STATES: dict[str, TargetState] = {state: state for state in get_args(TargetState)}


def shadow_strategy(row: DeploymentRow) -> ShadowStrategy:
    """The shadow settings of a deployment (its defaults when it was made without them)."""
    return DeploymentStrategy.model_validate(row.strategy).shadow or ShadowStrategy()


def tick_shadows(session: Session, *, now: datetime) -> int:
    """Advance every deployment in state ``shadow`` once; deployments moved."""
    query = select(DeploymentRow).where(DeploymentRow.state == "shadow").order_by(DeploymentRow.id)
    return sum(_advance(session, row, now=now) for row in session.scalars(query).all())


def reports(session: Session, *, deployment_id: int) -> dict[str, tuple[ShadowReport, datetime]]:
    """Each agent's latest shadow report for a deployment, and when it was stored."""
    query = select(ShadowReportRow).where(ShadowReportRow.deployment_id == deployment_id)
    return {
        row.agent_id: (ShadowReport.model_validate(row.report), row.updated_at)
        for row in session.scalars(query)
    }


def promote(session: Session, *, row: DeploymentRow, now: datetime, reason: str) -> None:
    """Withdraw the shadows and start a canary of the same version (ConflictError unless the
    deployment is in state ``shadow``). In the caller's transaction."""
    _check_shadow(row, "promote")
    agents = deployment_agents(session, deployment_ids=[row.id])
    set_shadow(session, agent_ids=[a.agent_id for a in agents], pipeline=row.pipeline,
               shadow=None, now=now)  # fmt: skip
    for agent in agents:
        agent.state, agent.reason, agent.updated_at = "pending", "", now
    row.state, row.reason, row.updated_at = "canary", reason, now
    log.info("deployment %d: shadow promoted into a canary: %s", row.id, reason)


def discard(session: Session, *, row: DeploymentRow, now: datetime, reason: str) -> None:
    """Withdraw the shadows and end the deployment ``discarded`` (ConflictError unless it is in
    state ``shadow``). In the caller's transaction."""
    _check_shadow(row, "discard")
    agents = deployment_agents(session, deployment_ids=[row.id])
    set_shadow(session, agent_ids=[a.agent_id for a in agents], pipeline=row.pipeline,
               shadow=None, now=now)  # fmt: skip
    for agent in agents:
        if agent.state != "failed":
            agent.state, agent.reason, agent.updated_at = "cancelled", "shadow discarded", now
    row.state, row.reason, row.updated_at = "discarded", reason, now
    log.info("deployment %d: shadow discarded: %s", row.id, reason)


def _check_shadow(row: DeploymentRow, what: str) -> None:
    if row.state != "shadow":
        raise ConflictError(f"deployment {row.id} is {row.state}, not in shadow: cannot {what}")


def _advance(session: Session, row: DeploymentRow, *, now: datetime) -> bool:
    strategy = DeploymentStrategy.model_validate(row.strategy)
    plan = strategy.shadow or ShadowStrategy()
    agents = deployment_agents(session, deployment_ids=[row.id])
    changed = _ask(session, row, plan, [a for a in agents if a.state == "pending"], now=now)
    if row.state != "shadow":
        return True  # _ask discarded it
    reported = agents_by_id(session, agent_ids=[a.agent_id for a in agents])
    stored = reports(session, deployment_id=row.id)
    judged: list[tuple[TargetState, ShadowReport | None]] = []
    for agent in agents:
        report = _reported(reported.get(agent.agent_id), row)
        kept = stored.get(agent.agent_id)
        if report is not None and (kept is None or kept[0] != report):
            session.merge(
                ShadowReportRow(
                    deployment_id=row.id, agent_id=agent.agent_id,
                    report=report.model_dump(mode="json"), updated_at=now,
                )
            )  # fmt: skip
            changed = True
        elif report is None and kept is not None:
            report = kept[0]
        state = _judge(row, agent, report, now=now, timeout_s=strategy.agent_timeout_s)
        changed = changed or state is not None
        judged.append((_TARGET_STATES[agent.state], report))
    if agents and window_over(judged):
        return _end_window(session, row, plan, judged, now=now) or changed
    return changed


def _judge(
    row: DeploymentRow, agent: DeploymentAgentRow, report: ShadowReport | None, *,
    now: datetime, timeout_s: float,
) -> TargetState | None:  # fmt: skip
    """Move one agent on from its report; its new state, None if nothing changed."""
    was = _TARGET_STATES[agent.state]
    if was == "failed":
        return None  # a refusal or a timeout is final for this deployment
    state, reason = agent_state(was, report, since=agent.updated_at, now=now, timeout_s=timeout_s)
    if (state, reason) == (was, agent.reason):
        return None
    agent.reason = reason
    if state != was:
        agent.state, agent.updated_at = state, now
        log.info(
            "deployment %d: shadow on %s %s -> %s %s", row.id, agent.agent_id, was, state, reason
        )
    return state


def _end_window(
    session: Session, row: DeploymentRow, plan: ShadowStrategy,
    judged: Sequence[tuple[TargetState, ShadowReport | None]], *, now: datetime,
) -> bool:  # fmt: skip
    complete = [r for s, r in judged if s != "failed" and r is not None]
    decided = outcome(plan, complete, failed=sum(s == "failed" for s, _ in judged))
    if decided.action == "promote":
        promote(session, row=row, now=now, reason=decided.reason)
    elif decided.action == "discard":
        discard(session, row=row, now=now, reason=decided.reason)
    elif row.reason != decided.reason:
        row.reason, row.updated_at = decided.reason, now
    else:
        return False
    return True


def _ask(
    session: Session, row: DeploymentRow, plan: ShadowStrategy,
    pending: Sequence[DeploymentAgentRow], *, now: datetime,
) -> bool:  # fmt: skip
    """Put the candidate in the pending agents' desired states; True if any was asked."""
    if not pending:
        return False
    version = get_model_version(session, name=row.model, version=row.version)
    if version is None:  # the registry never deletes versions: a database edited by hand
        discard(
            session, row=row, now=now, reason=f"model {row.model} {row.version} is not registered"
        )
        return True
    manifest = SignedManifest.model_validate(version.manifest)
    shadow = DesiredShadow(
        model=entry_for(row.pipeline, row.id, manifest), share=plan.share,
        cpu_budget=plan.cpu_budget, window_s=plan.window_s,
    )  # fmt: skip
    set_shadow(session, agent_ids=[a.agent_id for a in pending], pipeline=row.pipeline,
               shadow=shadow, now=now)  # fmt: skip
    for agent in pending:
        agent.state, agent.reason, agent.updated_at = "updating", "", now
    return True


def _reported(agent: AgentRow | None, row: DeploymentRow) -> ShadowReport | None:
    """The shadow report in an agent's last status for this deployment's pipeline, if it is
    about this deployment."""
    if agent is None:
        return None
    for entry in (agent.last_status or {}).get("pipelines", []):
        if entry.get("name") == row.pipeline and entry.get("shadow") is not None:
            try:
                report = ShadowReport.model_validate(entry["shadow"])
            except ValidationError:
                return None  # stored by ingest after validation: only a hand-edited row
            return report if report.deployment_id == row.id else None
    return None
