"""The deployment state machine: pure, no SQL, no MQTT, no clock.

A deployment resolves its target to agents once, at creation, and picks its canary among
them deterministically (the first ``ceil(fraction x targets)`` ids in sorted order). Then,
every tick, ``advance`` looks at what each agent reports in its retained ``status`` and says
what changes:

- canary: each canary agent's desired entry for the pipeline becomes the new version (its
  previous entry is kept to roll back to). An agent is ``healthy`` when it reports the
  version ``running`` and is online. Once every canary has been healthy for
  ``canary_healthy_s``, and its model quality over that period holds against a baseline
  (``quality.py``: its alarm rate, not only its errors), the deployment is ``rolling``; a
  canary out of those bounds halts it like a failed one. If one canary fails (refused it,
  rolled it back, or timed out) the deployment is ``halted``: every canary's desired entry
  is put back to its previous one and the rest are never touched.
- rolling: the rest get the version. A failure here marks that agent failed and puts its
  own desired entry back; the others go on (one bad gateway should not hold a fleet hostage
  once the canary proved the version). When every agent has settled the deployment is
  ``succeeded`` if all are healthy, else ``halted`` with the failed agents in its reason.
- cancelled (by an operator): nothing moves any more; agents that already got the version
  keep their desired state (cancelling is not a rollback: deploy the old version for that).

An agent that is not running the version ``agent_timeout_s`` after it was asked (or after it
stopped being healthy) fails with "timed out in state X". An offline agent is not healthy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import get_args

from cloud_api.deployment_schemas import (
    ActiveDeploymentState,
    DeploymentState,
    DeploymentStrategy,
    FailedTargetState,
    Phase,
    SettledTargetState,
    TargetState,
)
from cloud_api.rollout.quality import QualityCheck, QualityVerdict, judge_quality
from shared.errors import ContractError
from shared.messages import DesiredModel, ModelRef, UpdateStatus

ACTIVE: tuple[DeploymentState, ...] = get_args(ActiveDeploymentState)
SETTLED: tuple[TargetState, ...] = get_args(SettledTargetState)
FAILED: tuple[TargetState, ...] = get_args(FailedTargetState)


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """One agent of one deployment (a ``deployment_agents`` row, without I/O).

    ``previous`` is the agent's desired entry for the pipeline before the deployment asked
    it (None: it ran its configured model), which a rollback puts back.
    """

    agent_id: str
    phase: Phase
    state: TargetState
    updated_at: datetime
    reason: str = ""
    previous: DesiredModel | None = None
    running_version: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What an agent reports about one pipeline, and whether it is online."""

    online: bool
    model: ModelRef | None = None
    update: UpdateStatus | None = None
    offline_reason: str = ""


@dataclass(frozen=True, slots=True)
class Rollout:
    """A deployment as ``advance`` needs it: who, what, how, and where it stands."""

    id: int
    version: str
    sha256: str
    state: DeploymentState
    reason: str
    strategy: DeploymentStrategy
    entry: DesiredModel


@dataclass(frozen=True, slots=True)
class Step:
    """What one tick decided: the deployment's new state, its agents, the desired changes.

    ``desired`` maps an agent to its new entry for the deployment's pipeline (None: remove
    the entry, the agent runs its configured model).
    """

    state: DeploymentState
    reason: str
    targets: list[AgentTarget]
    desired: dict[str, DesiredModel | None]


def split_canary(agent_ids: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """The canary (first ``ceil(fraction x n)`` ids, at least one) and the rest, sorted."""
    if not 0 < fraction <= 1:
        raise ContractError(f"canary fraction must be in (0, 1], not {fraction}")
    ordered = sorted(set(agent_ids))
    # 1e-9: 0.6 x 5 is 3.0000000000000004 in floating point, and must stay 3.
    count = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[:count], ordered[count:]


def judge(
    target: AgentTarget, seen: Observation | None, rollout: Rollout, now: datetime
) -> AgentTarget:
    """The new state of an agent that was asked to run the version (updating or healthy)."""
    update = seen.update if seen is not None else None
    ours = (rollout.id, rollout.version)
    if update is not None and (update.deployment_id, update.version) != ours:
        update = None  # about another deployment
    if update is not None and update.state in FAILED:
        reason = update.reason or f"{update.state.replace('_', ' ')} by the agent"
        return replace(target, state=update.state, reason=reason, updated_at=now)
    if update is not None:
        running = update.state == "running"
    else:
        # An agent that already runs exactly this artifact has nothing to do.
        model = seen.model if seen is not None else None
        running = model is not None and model.sha256 == rollout.sha256
    if running and seen is not None and seen.online:
        if target.state == "healthy":
            return target
        return replace(target, state="healthy", reason="", updated_at=now)
    where = _where(seen, update)
    if target.state == "healthy":
        reason = f"no longer healthy: {where}"
        return replace(target, state="updating", reason=reason, updated_at=now)
    if now - target.updated_at >= timedelta(seconds=rollout.strategy.agent_timeout_s):
        reason = f"timed out in state {where}"
        return replace(target, state="failed", reason=reason, updated_at=now)
    return target


def _where(seen: Observation | None, update: UpdateStatus | None) -> str:
    if seen is None:
        return "never reported"
    if not seen.online:
        return f"offline ({seen.offline_reason})" if seen.offline_reason else "offline"
    if update is None:
        return "pending"  # the agent has not started on this deployment
    return update.state


def advance(
    rollout: Rollout,
    targets: Sequence[AgentTarget],
    seen: Mapping[str, Observation],
    current: Mapping[str, DesiredModel | None],
    now: datetime,
    quality: QualityCheck | None = None,
) -> Step:
    """One tick of one deployment: from what agents report, the new states and desired entries.

    ``seen`` holds what each agent reports (absent: it never reported); ``current`` holds each
    agent's desired entry for the pipeline now (absent or None: it runs its configured model);
    ``quality`` gives the canary's and its baseline's figures (None: errors only).
    """
    if rollout.state not in ACTIVE:
        return Step(rollout.state, rollout.reason, list(targets), {})
    desired: dict[str, DesiredModel | None] = {}
    state: DeploymentState = rollout.state
    out: list[AgentTarget] = []
    for target in targets:
        observed = seen.get(target.agent_id)
        if observed is not None and observed.model is not None:
            target = replace(target, running_version=observed.model.version)
        if target.state == "pending" and (target.phase == "canary" or state == "rolling"):
            target = _ask(target, rollout, current, desired, now)
        elif target.state in ("updating", "healthy"):
            before = target.state
            target = judge(target, observed, rollout, now)
            if state == "rolling" and target.state in FAILED and before not in FAILED:
                desired[target.agent_id] = target.previous
        out.append(target)

    reason = rollout.reason
    if state == "canary":
        step = _canary(rollout, out, current, desired, now, quality)
        if step.state != "rolling":
            return step
        state, reason, out = step.state, step.reason, step.targets

    if state == "rolling" and all(t.state in SETTLED for t in out):
        failed = [t for t in out if t.state in FAILED]
        if not failed:
            return Step("succeeded", "", out, desired)
        reasons = "; ".join(f"{t.agent_id} {t.state}: {t.reason}" for t in failed)
        return Step("halted", f"{len(failed)} of {len(out)} agents failed: {reasons}", out, desired)
    return Step(state, reason, out, desired)


def _canary(
    rollout: Rollout,
    out: list[AgentTarget],
    current: Mapping[str, DesiredModel | None],
    desired: dict[str, DesiredModel | None],
    now: datetime,
    quality: QualityCheck | None,
) -> Step:
    """The canary phase's tick: halted (a canary failed, or its model quality is out of
    bounds), still canary, or rolling (the rest are asked)."""
    canary = [t for t in out if t.phase == "canary"]
    failed = [t for t in canary if t.state in FAILED]
    if failed:
        names = ", ".join(t.agent_id for t in failed)
        why = "; ".join(f"canary {t.agent_id} {t.state}: {t.reason}" for t in failed)
        return Step("halted", why, _halt(out, desired, now, f"canary {names} failed"), desired)
    healthy_since = max(t.updated_at for t in canary)
    wait = timedelta(seconds=rollout.strategy.canary_healthy_s)
    if not all(t.state == "healthy" for t in canary) or now - healthy_since < wait:
        return Step("canary", rollout.reason, out, desired)
    verdict = _quality(rollout, quality, healthy_since, now)
    if verdict is not None and verdict.passed is False:
        why = f"canary model quality out of bounds: {verdict.reason}"
        return Step("halted", why, _halt(out, desired, now, why), desired)
    if verdict is not None and verdict.passed is None:
        return Step("canary", f"judging model quality: {verdict.reason}", out, desired)
    out = [_ask(t, rollout, current, desired, now) if t.state == "pending" else t for t in out]
    return Step("rolling", f"canary quality: {verdict.reason}" if verdict else "", out, desired)


def _quality(
    rollout: Rollout, quality: QualityCheck | None, since: datetime, now: datetime
) -> QualityVerdict | None:
    """The canary's model quality over its healthy period (None: not judged); too few windows
    past ``agent_timeout_s`` of waiting is out of bounds too."""
    gate = rollout.strategy.quality
    if gate is None or quality is None:
        return None
    verdict = judge_quality(gate, *quality.figures(since, now))
    timeout = timedelta(seconds=rollout.strategy.agent_timeout_s)
    if verdict.passed is None and now - since >= timeout:
        return QualityVerdict(False, f"only {verdict.reason} after {timeout.total_seconds():g} s")
    return verdict


def _ask(
    target: AgentTarget,
    rollout: Rollout,
    current: Mapping[str, DesiredModel | None],
    desired: dict[str, DesiredModel | None],
    now: datetime,
) -> AgentTarget:
    """Give ``target`` the version, remembering what it had to roll back to."""
    desired[target.agent_id] = rollout.entry
    previous = current.get(target.agent_id)
    return replace(target, state="updating", reason="", previous=previous, updated_at=now)


def _halt(
    targets: list[AgentTarget], desired: dict[str, DesiredModel | None], now: datetime, cause: str
) -> list[AgentTarget]:
    """The canary failed (``cause``): every canary gets its previous entry back, the rest
    nothing."""
    out: list[AgentTarget] = []
    for target in targets:
        if target.phase == "canary":
            desired[target.agent_id] = target.previous
            if target.state == "healthy":
                reason = f"previous model restored: {cause}"
                target = replace(target, state="rolled_back", reason=reason, updated_at=now)
            elif target.state not in FAILED:
                reason = f"deployment halted ({cause}); previous entry restored"
                target = replace(target, state="cancelled", reason=reason, updated_at=now)
        elif target.state == "pending":
            reason = f"deployment halted before the rest: {cause}"
            target = replace(target, state="cancelled", reason=reason, updated_at=now)
        out.append(target)
    return out


def cancel(targets: Sequence[AgentTarget], now: datetime) -> list[AgentTarget]:
    """An operator stops a deployment: agents still pending or updating are cancelled."""
    return [
        replace(
            target,
            state="cancelled",
            reason="deployment cancelled"
            + (" (its desired state stays)" if target.state == "updating" else ""),
            updated_at=now,
        )
        if target.state in ("pending", "updating")
        else target
        for target in targets
    ]
