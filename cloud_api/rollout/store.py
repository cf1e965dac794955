"""Deployments in SQL: create and cancel them, and tick them forward with the state machine.

Each tick reads a deployment's agents, what they report and their desired states, lets
``machine.advance`` decide, and writes the result back in the caller's transaction. Desired
entries are typed (``DesiredModel``) between the rows and the machine: validated where they
are read from JSON, dumped (``desired.as_json``) where they are written. On PostgreSQL,
ticks and operators' writes exclude each other with advisory locks (``exclude_ticks``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, get_args

from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cloud_api.db import AdvisoryLock
from cloud_api.deployment_schemas import (
    DeploymentState,
    DeploymentStrategy,
    DeploymentTarget,
    Phase,
    TargetState,
)
from cloud_api.liveness import liveness
from cloud_api.queries.agents import agents_by_id, list_agents
from cloud_api.queries.deployments import (
    active_deployment_for_pipeline,
    active_deployments,
    deployment_agents,
)
from cloud_api.queries.models import get_model_version
from cloud_api.rollout.desired import as_json, entry_for, entry_of, with_entry
from cloud_api.rollout.machine import (
    ACTIVE,
    AgentTarget,
    Observation,
    Rollout,
    advance,
    cancel,
    split_canary,
)
from cloud_api.rollout.quality_figures import DeploymentQuality
from cloud_api.rollout.shadow_desired import set_shadow
from cloud_api.tables import AgentRow, DeploymentAgentRow, DeploymentRow, DesiredStateRow
from shared.errors import ConflictError, ContractError
from shared.messages import DesiredModel, DesiredState, PipelineStatus
from shared.signing import SignedManifest

log = logging.getLogger(__name__)

DEPLOYMENT_STATES: tuple[DeploymentState, ...] = get_args(DeploymentState)
TARGET_STATES: tuple[TargetState, ...] = get_args(TargetState)


def matching_agents(rows: Sequence[AgentRow], target: DeploymentTarget) -> list[str]:
    """The ids ``target`` names among ``rows``: listed ids, or agents with every label."""
    if target.agent_ids is not None:
        wanted = set(target.agent_ids)
        return sorted(row.agent_id for row in rows if row.agent_id in wanted)
    labels = target.labels or {}
    return sorted(
        row.agent_id
        for row in rows
        if all((row.labels or {}).get(key) == value for key, value in labels.items())
    )


def create_deployment(
    session: Session,
    *,
    model: str,
    version: str,
    pipeline: str,
    target: DeploymentTarget,
    strategy: DeploymentStrategy,
    now: datetime,
) -> DeploymentRow:
    """Record a deployment in state ``canary`` with its agents pending; the worker moves it.

    The model version must be registered (ContractError otherwise; the route checks first to
    answer 404). ContractError when the target matches no agent, names agents that never
    reported, or agents that do not run ``pipeline``; ConflictError when a deployment on the
    same pipeline is still moving. Committed here.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(AdvisoryLock.ROLLOUT_CREATE)))
    if get_model_version(session, name=model, version=version) is None:
        raise ContractError(f"model {model!r} has no version {version!r}")
    active = active_deployment_for_pipeline(session, pipeline=pipeline)
    if active is not None:
        raise ConflictError(
            f"deployment {active.id} ({active.model} {active.version}) is still {active.state} "
            f"on pipeline {pipeline!r}: wait for it or cancel it"
        )
    agents = _targeted_agents(session, target, pipeline)
    canary, rest = split_canary(list(agents), strategy.canary_fraction)
    row = DeploymentRow(
        model=model,
        version=version,
        pipeline=pipeline,
        target=target.model_dump(mode="json"),
        strategy=strategy.model_dump(mode="json"),
        state="shadow" if strategy.kind == "shadow" else "canary",
        reason="",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    phases: tuple[tuple[Phase, list[str]], ...] = (("canary", canary), ("rest", rest))
    for phase, ids in phases:
        session.add_all(_pending(row, agents[agent_id], phase, now=now) for agent_id in ids)
    session.commit()
    log.info(
        "deployment %d: %s %s to %s on %d agents (canary %s)",
        row.id, model, version, pipeline, len(agents), ", ".join(canary),
    )  # fmt: skip
    return row


def _pending(
    deployment: DeploymentRow, agent: AgentRow, phase: Phase, *, now: datetime
) -> DeploymentAgentRow:
    """An agent of a new deployment, not asked yet, with the version it runs now."""
    status = _pipeline_status(agent, deployment.pipeline)
    return DeploymentAgentRow(
        deployment_id=deployment.id,
        agent_id=agent.agent_id,
        phase=phase,
        state="pending",
        reason="",
        previous=None,
        running_version=status.model.version if status and status.model else None,
        updated_at=now,
    )


def _targeted_agents(
    session: Session, target: DeploymentTarget, pipeline: str
) -> dict[str, AgentRow]:
    """The agents ``target`` names, by id; ContractError for none, unknown ids, or agents
    that do not report ``pipeline``."""
    if target.agent_ids is not None:
        known = agents_by_id(session, agent_ids=target.agent_ids)
        unknown = sorted(set(target.agent_ids) - set(known))
        if unknown:
            raise ContractError(f"agents never reported: {', '.join(unknown)}")
        rows = list(known.values())
    else:
        rows = list(list_agents(session))
    agent_ids = matching_agents(rows, target)
    if not agent_ids:
        raise ContractError(f"no agent has the labels {target.labels}")
    by_id = {row.agent_id: row for row in rows}
    without = [a for a in agent_ids if _pipeline_status(by_id[a], pipeline) is None]
    if without:
        raise ContractError(f"agents do not report a pipeline {pipeline!r}: {', '.join(without)}")
    return {agent_id: by_id[agent_id] for agent_id in agent_ids}


def exclude_ticks(session: Session) -> None:
    """Wait for a tick in progress and keep the next one out until this transaction ends.

    PostgreSQL: the ticks' advisory lock, at transaction level. SQLite: its write lock, taken
    now (``BEGIN IMMEDIATE``), so that what this transaction reads is what it then overwrites
    (pysqlite would otherwise read outside any transaction and begin one only at the first
    write, and a tick and an operator could each overwrite what the other just wrote).
    Call it before anything else in the transaction writes.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(AdvisoryLock.ROLLOUT_TICK)))
    else:
        session.execute(text("BEGIN IMMEDIATE"))


def cancel_deployment(session: Session, *, row: DeploymentRow, now: datetime) -> DeploymentRow:
    """Stop a deployment that is still moving (ConflictError for one that ended); committed."""
    exclude_ticks(session)
    session.refresh(row)
    if row.state not in ACTIVE:
        raise ConflictError(f"deployment {row.id} has ended ({row.state}): nothing to cancel")
    agents = deployment_agents(session, deployment_ids=[row.id])
    targets = cancel([_agent_target(a) for a in agents], now)
    for agent, target in zip(agents, targets, strict=True):
        _store_target(agent, target)
    if row.state == "shadow":
        ids = [a.agent_id for a in agents]
        set_shadow(session, agent_ids=ids, pipeline=row.pipeline, shadow=None, now=now)
    row.state, row.reason, row.updated_at = "cancelled", "cancelled by an operator", now
    session.commit()
    log.info("deployment %d cancelled", row.id)
    return row


def tick(session: Session, *, now: datetime, grace: float) -> int:
    """Advance every active deployment once, in the session's transaction; deployments moved.

    The caller commits, then publishes the desired states that changed.
    """
    moved = 0
    for row in active_deployments(session):
        if row.state == "shadow":
            continue  # shadow_store.tick_shadows moves it until it is promoted
        if _advance_row(session, row, now=now, grace=grace):
            moved += 1
    return moved


def desired_states(session: Session, *, agent_ids: Sequence[str]) -> dict[str, DesiredStateRow]:
    """The desired states last issued to the agents among ``agent_ids``, by id."""
    query = select(DesiredStateRow).where(DesiredStateRow.agent_id.in_(agent_ids))
    return {row.agent_id: row for row in session.scalars(query)}


def desired_state_versions(session: Session) -> list[tuple[str, datetime]]:
    """When each agent's desired state was issued: what the broker should hold retained."""
    query = select(DesiredStateRow.agent_id, DesiredStateRow.updated_at)
    return [(agent_id, issued_at) for agent_id, issued_at in session.execute(query)]


def _advance_row(session: Session, row: DeploymentRow, *, now: datetime, grace: float) -> bool:
    version = get_model_version(session, name=row.model, version=row.version)
    agents = deployment_agents(session, deployment_ids=[row.id])
    ids = [agent.agent_id for agent in agents]
    if version is None:
        # The registry never deletes versions; this is a database edited by hand.
        row.state, row.reason = "halted", f"model {row.model} {row.version} is not registered"
        row.updated_at = now
        return True
    reported = agents_by_id(session, agent_ids=ids)
    seen = {
        agent_id: _observe(agent, row.pipeline, now=now, grace=grace)
        for agent_id, agent in reported.items()
    }
    states = desired_states(session, agent_ids=ids)
    current = {agent_id: entry_of(_desired(d), row.pipeline) for agent_id, d in states.items()}
    before = [_agent_target(agent) for agent in agents]
    quality = DeploymentQuality(
        session, pipeline=row.pipeline, model=row.model, version=row.version,
        created_at=row.created_at,
        canary=[a.agent_id for a in agents if a.phase == "canary"],
        rest=[a.agent_id for a in agents if a.phase != "canary"],
    )  # fmt: skip
    step = advance(_rollout(row, version.manifest), before, seen, current, now, quality)

    changed = False
    for agent, was, target in zip(agents, before, step.targets, strict=True):
        if target != was:
            if target.state != agent.state:
                log.info(
                    "deployment %d: agent %s %s -> %s %s",
                    row.id, agent.agent_id, agent.state, target.state, target.reason,
                )  # fmt: skip
            _store_target(agent, target)
            changed = True
    _issue_desired(session, states, step.desired, pipeline=row.pipeline, now=now)
    if (step.state, step.reason) != (row.state, row.reason):
        log.info("deployment %d: %s -> %s %s", row.id, row.state, step.state, step.reason)
        row.state, row.reason, row.updated_at = step.state, step.reason, now
        changed = True
    return changed or bool(step.desired)


def _rollout(row: DeploymentRow, manifest_json: dict[str, Any]) -> Rollout:
    manifest = SignedManifest.model_validate(manifest_json)
    return Rollout(
        id=row.id,
        version=row.version,
        sha256=manifest.manifest.sha256,
        state=_deployment_state(row.state),
        reason=row.reason,
        strategy=DeploymentStrategy.model_validate(row.strategy),
        entry=entry_for(row.pipeline, row.id, manifest),
    )


def _issue_desired(
    session: Session,
    states: Mapping[str, DesiredStateRow],
    changes: Mapping[str, DesiredModel | None],
    *,
    pipeline: str,
    now: datetime,
) -> None:
    """Write each changed agent's whole desired state, issued ``now``; the worker publishes."""
    for agent_id, entry in changes.items():
        row = states.get(agent_id)
        state = with_entry(
            _desired(row) if row else None,
            agent_id=agent_id,
            pipeline=pipeline,
            entry=entry,
            issued_at=now,
        )
        if row is None:
            session.add(DesiredStateRow(agent_id=agent_id, payload=as_json(state), updated_at=now))
        else:
            row.payload, row.updated_at = as_json(state), now


def _deployment_state(value: str) -> DeploymentState:
    for state in DEPLOYMENT_STATES:
        if value == state:
            return state
    raise ContractError(f"unknown deployment state {value!r} in the database")


def _agent_target(row: DeploymentAgentRow) -> AgentTarget:
    return AgentTarget(
        agent_id=row.agent_id,
        phase="canary" if row.phase == "canary" else "rest",
        state=_target_state(row.state),
        updated_at=row.updated_at,
        reason=row.reason,
        previous=DesiredModel.model_validate(row.previous) if row.previous is not None else None,
        running_version=row.running_version,
    )


def _target_state(value: str) -> TargetState:
    for state in TARGET_STATES:
        if value == state:
            return state
    raise ContractError(f"unknown deployment agent state {value!r} in the database")


def _store_target(row: DeploymentAgentRow, target: AgentTarget) -> None:
    row.state, row.reason = target.state, target.reason
    row.previous = as_json(target.previous) if target.previous is not None else None
    row.running_version, row.updated_at = target.running_version, target.updated_at


def _pipeline_status(row: AgentRow, pipeline: str) -> PipelineStatus | None:
    """The pipeline's part of an agent's last status (None if it does not report it)."""
    for entry in (row.last_status or {}).get("pipelines", []):
        if entry.get("name") == pipeline:
            try:
                return PipelineStatus.model_validate(entry)
            except ValidationError:
                return None  # stored by ingest after validation: only a hand-edited row
    return None


def _observe(row: AgentRow, pipeline: str, *, now: datetime, grace: float) -> Observation:
    judged = liveness(row, now=now, grace=grace)
    status = _pipeline_status(row, pipeline)
    return Observation(
        online=judged.online,
        model=status.model if status else None,
        update=status.update if status else None,
        offline_reason="" if judged.online else judged.reason,
    )


def _desired(row: DesiredStateRow) -> DesiredState:
    return DesiredState.model_validate(row.payload)
