"""Model rollouts: the deployment state machine and the worker that drives it.

A deployment resolves its target to agents once, at creation, and picks its canary among
them deterministically (the first ``ceil(fraction x targets)`` ids in sorted order). Then,
every tick, ``advance`` (pure: no I/O, no clock) looks at what each agent reports in its
retained ``status`` and says what changes:

- canary: each canary agent's desired entry for the pipeline becomes the new version (its
  previous entry is kept to roll back to). An agent is ``healthy`` when it reports the
  version ``running`` and is online. Once every canary has been healthy for
  ``canary_healthy_s``, the deployment is ``rolling``. If one canary fails (refused it,
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

``RolloutWorker`` runs the ticks: it reads the active deployments, advances them, commits,
and only then publishes the desired states that changed (retained, QoS 1) with its own MQTT
client. It also subscribes to every agent's ``desired`` topic, so it knows what the broker
holds: whatever differs from the ``desired_states`` table (a publish lost with a connection,
a broker restarted without persistence) is published again on the next tick. Publishing a
desired state twice is harmless. On PostgreSQL, each tick runs under a transaction-level
advisory lock, so among several API replicas one advances deployments at a time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from cloud_api.config import parse_mqtt_url
from cloud_api.db import AdvisoryLock
from cloud_api.liveness import liveness
from cloud_api.mqtt import make_client
from cloud_api.queries.agents import agents_by_id, list_agents
from cloud_api.queries.deployments import (
    active_deployment_for_pipeline,
    active_deployments,
    deployment_agents,
)
from cloud_api.queries.models import get_model_version
from cloud_api.schemas import (
    DeploymentState,
    DeploymentStrategy,
    DeploymentTarget,
    Phase,
    TargetState,
)
from cloud_api.tables import AgentRow, DeploymentAgentRow, DeploymentRow, DesiredStateRow
from shared.errors import ConfigError, ConflictError, ContractError
from shared.messages import (
    DesiredModel,
    DesiredState,
    ModelRef,
    PipelineStatus,
    UpdateStatus,
    encode,
    utcnow,
)
from shared.signing import SignedManifest
from shared.topics import Channel, Topic, subscription

log = logging.getLogger(__name__)

ACTIVE: tuple[DeploymentState, ...] = ("canary", "rolling")
SETTLED: tuple[TargetState, ...] = ("healthy", "failed", "rolled_back", "cancelled")
FAILED: tuple[TargetState, ...] = ("failed", "rolled_back")
RESEND_S = 10.0
"""A desired state the broker has not echoed back this long after a publish is sent again."""

Entry = dict[str, Any]
"""A ``DesiredModel`` as JSON (by alias): how desired entries are stored and compared."""


# -- the pure part ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One agent of one deployment (a ``deployment_agents`` row, without I/O)."""

    agent_id: str
    phase: Phase
    state: TargetState
    updated_at: datetime
    reason: str = ""
    previous: Entry | None = None
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
    entry: Entry


@dataclass(frozen=True, slots=True)
class Step:
    """What one tick decided: the deployment's new state, its agents, the desired changes.

    ``desired`` maps an agent to its new entry for the deployment's pipeline (None: remove
    the entry, the agent runs its configured model).
    """

    state: DeploymentState
    reason: str
    targets: list[Target]
    desired: dict[str, Entry | None]


def split_canary(agent_ids: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """The canary (first ``ceil(fraction x n)`` ids, at least one) and the rest, sorted."""
    if not 0 < fraction <= 1:
        raise ContractError(f"canary fraction must be in (0, 1], not {fraction}")
    ordered = sorted(set(agent_ids))
    # 1e-9: 0.6 x 5 is 3.0000000000000004 in floating point, and must stay 3.
    count = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[:count], ordered[count:]


def judge(target: Target, seen: Observation | None, rollout: Rollout, now: datetime) -> Target:
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
    targets: Sequence[Target],
    seen: Mapping[str, Observation],
    current: Mapping[str, Entry | None],
    now: datetime,
) -> Step:
    """One tick of one deployment: from what agents report, the new states and desired entries.

    ``seen`` holds what each agent reports (absent: it never reported); ``current`` holds each
    agent's desired entry for the pipeline now (absent or None: it runs its configured model).
    """
    if rollout.state not in ACTIVE:
        return Step(rollout.state, rollout.reason, list(targets), {})
    desired: dict[str, Entry | None] = {}
    state: DeploymentState = rollout.state
    out: list[Target] = []
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

    if state == "canary":
        canary = [t for t in out if t.phase == "canary"]
        failed = [t for t in canary if t.state in FAILED]
        if failed:
            return _halt(rollout, out, failed, desired, now)
        healthy_since = max(t.updated_at for t in canary)
        wait = timedelta(seconds=rollout.strategy.canary_healthy_s)
        if all(t.state == "healthy" for t in canary) and now - healthy_since >= wait:
            state = "rolling"
            out = [
                _ask(t, rollout, current, desired, now) if t.state == "pending" else t for t in out
            ]

    if state == "rolling" and all(t.state in SETTLED for t in out):
        failed = [t for t in out if t.state in FAILED]
        if not failed:
            return Step("succeeded", "", out, desired)
        reasons = "; ".join(f"{t.agent_id} {t.state}: {t.reason}" for t in failed)
        return Step("halted", f"{len(failed)} of {len(out)} agents failed: {reasons}", out, desired)
    return Step(state, rollout.reason, out, desired)


def _ask(
    target: Target,
    rollout: Rollout,
    current: Mapping[str, Entry | None],
    desired: dict[str, Entry | None],
    now: datetime,
) -> Target:
    """Give ``target`` the version, remembering what it had to roll back to."""
    desired[target.agent_id] = rollout.entry
    previous = current.get(target.agent_id)
    return replace(target, state="updating", reason="", previous=previous, updated_at=now)


def _halt(
    rollout: Rollout,
    targets: list[Target],
    failed: list[Target],
    desired: dict[str, Entry | None],
    now: datetime,
) -> Step:
    """The canary failed: every canary gets its previous entry back, the rest nothing."""
    names = ", ".join(t.agent_id for t in failed)
    out: list[Target] = []
    for target in targets:
        if target.phase == "canary":
            desired[target.agent_id] = target.previous
            if target.state == "healthy":
                reason = f"previous model restored: canary {names} failed"
                target = replace(target, state="rolled_back", reason=reason, updated_at=now)
            elif target.state not in FAILED:
                reason = f"deployment halted (canary {names} failed); previous entry restored"
                target = replace(target, state="cancelled", reason=reason, updated_at=now)
        elif target.state == "pending":
            reason = f"deployment halted before the rest: canary {names} failed"
            target = replace(target, state="cancelled", reason=reason, updated_at=now)
        out.append(target)
    reasons = "; ".join(f"canary {t.agent_id} {t.state}: {t.reason}" for t in failed)
    return Step("halted", reasons, out, desired)


def cancel(targets: Sequence[Target], now: datetime) -> list[Target]:
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


def with_entry(
    state: Mapping[str, Any] | None, *, agent_id: str, pipeline: str, entry: Entry | None,
    issued_at: datetime,
) -> dict[str, Any]:  # fmt: skip
    """An agent's whole desired state with ``pipeline``'s entry replaced (or removed).

    The other pipelines' entries stay: a desired state is always the whole of it.
    """
    kept = [p for p in (state or {}).get("pipelines", []) if p.get("pipeline") != pipeline]
    pipelines = [DesiredModel.model_validate(p) for p in kept]
    if entry is not None:
        pipelines.append(DesiredModel.model_validate(entry))
    pipelines.sort(key=lambda p: p.pipeline)
    message = DesiredState(agent_id=agent_id, issued_at=issued_at, pipelines=pipelines)
    return message.model_dump(mode="json", by_alias=True)


def entry_for(pipeline: str, deployment_id: int, manifest: SignedManifest) -> Entry:
    """The desired entry that asks ``pipeline`` to run the manifest's model version."""
    model = manifest.manifest
    entry = DesiredModel(
        pipeline=pipeline,
        deployment_id=deployment_id,
        manifest=manifest,
        artifact_path=f"/api/v1/models/{model.name}/versions/{model.version}/artifact",
    )
    return entry.model_dump(mode="json", by_alias=True)


# -- the database side ------------------------------------------------------------------


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

    canary, rest = split_canary(agent_ids, strategy.canary_fraction)
    row = DeploymentRow(
        model=model,
        version=version,
        pipeline=pipeline,
        target=target.model_dump(mode="json"),
        strategy=strategy.model_dump(mode="json"),
        state="canary",
        reason="",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    for phase, ids in (("canary", canary), ("rest", rest)):
        for agent_id in ids:
            status = _pipeline_status(by_id[agent_id], pipeline)
            session.add(
                DeploymentAgentRow(
                    deployment_id=row.id,
                    agent_id=agent_id,
                    phase=phase,
                    state="pending",
                    reason="",
                    previous=None,
                    running_version=status.model.version if status and status.model else None,
                    updated_at=now,
                )
            )
    session.commit()
    log.info(
        "deployment %d: %s %s to %s on %d agents (canary %s)",
        row.id, model, version, pipeline, len(agent_ids), ", ".join(canary),
    )  # fmt: skip
    return row


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
    targets = cancel([_target(a) for a in agents], now)
    for agent, target in zip(agents, targets, strict=True):
        _store_target(agent, target)
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
        if _advance_row(session, row, now=now, grace=grace):
            moved += 1
    return moved


def _advance_row(session: Session, row: DeploymentRow, *, now: datetime, grace: float) -> bool:
    version = get_model_version(session, name=row.model, version=row.version)
    agents = deployment_agents(session, deployment_ids=[row.id])
    ids = [agent.agent_id for agent in agents]
    if version is None:
        # The registry never deletes versions; this is a database edited by hand.
        row.state, row.reason = "halted", f"model {row.model} {row.version} is not registered"
        row.updated_at = now
        return True
    manifest = SignedManifest.model_validate(version.manifest)
    rollout = Rollout(
        id=row.id,
        version=row.version,
        sha256=manifest.manifest.sha256,
        state=_deployment_state(row.state),
        reason=row.reason,
        strategy=DeploymentStrategy.model_validate(row.strategy),
        entry=entry_for(row.pipeline, row.id, manifest),
    )
    reported = agents_by_id(session, agent_ids=ids)
    seen = {
        agent_id: _observe(agent, row.pipeline, now=now, grace=grace)
        for agent_id, agent in reported.items()
    }
    states = desired_states(session, agent_ids=ids)
    current = {agent_id: _entry_of(d.payload, row.pipeline) for agent_id, d in states.items()}
    step = advance(rollout, [_target(a) for a in agents], seen, current, now)

    changed = False
    for agent, target in zip(agents, step.targets, strict=True):
        if target != _target(agent):
            if target.state != agent.state:
                log.info(
                    "deployment %d: agent %s %s -> %s %s",
                    row.id, agent.agent_id, agent.state, target.state, target.reason,
                )  # fmt: skip
            _store_target(agent, target)
            changed = True
    for agent_id, entry in step.desired.items():
        state = states.get(agent_id)
        payload = with_entry(
            state.payload if state else None,
            agent_id=agent_id,
            pipeline=row.pipeline,
            entry=entry,
            issued_at=now,
        )
        if state is None:
            session.add(DesiredStateRow(agent_id=agent_id, payload=payload, updated_at=now))
        else:
            state.payload, state.updated_at = payload, now
    if (step.state, step.reason) != (row.state, row.reason):
        log.info("deployment %d: %s -> %s %s", row.id, row.state, step.state, step.reason)
        row.state, row.reason, row.updated_at = step.state, step.reason, now
        changed = True
    return changed or bool(step.desired)


def _deployment_state(value: str) -> DeploymentState:
    for state in ("canary", "rolling", "succeeded", "halted", "cancelled"):
        if value == state:
            return state
    raise ContractError(f"unknown deployment state {value!r} in the database")


def _target(row: DeploymentAgentRow) -> Target:
    return Target(
        agent_id=row.agent_id,
        phase="canary" if row.phase == "canary" else "rest",
        state=_target_state(row.state),
        updated_at=row.updated_at,
        reason=row.reason,
        previous=row.previous,
        running_version=row.running_version,
    )


def _target_state(value: str) -> TargetState:
    for state in ("pending", "updating", "healthy", "failed", "rolled_back", "cancelled"):
        if value == state:
            return state
    raise ContractError(f"unknown deployment agent state {value!r} in the database")


def _store_target(row: DeploymentAgentRow, target: Target) -> None:
    row.state, row.reason, row.previous = target.state, target.reason, target.previous
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


def desired_states(session: Session, *, agent_ids: Sequence[str]) -> dict[str, DesiredStateRow]:
    """The desired states last issued to the agents among ``agent_ids``, by id."""
    query = select(DesiredStateRow).where(DesiredStateRow.agent_id.in_(agent_ids))
    return {row.agent_id: row for row in session.scalars(query)}


def desired_state_versions(session: Session) -> list[tuple[str, datetime]]:
    """When each agent's desired state was issued: what the broker should hold retained."""
    query = select(DesiredStateRow.agent_id, DesiredStateRow.updated_at)
    return [(agent_id, issued_at) for agent_id, issued_at in session.execute(query)]


def _entry_of(payload: Mapping[str, Any], pipeline: str) -> Entry | None:
    for entry in payload.get("pipelines", []):
        if entry.get("pipeline") == pipeline:
            return dict(entry)
    return None


# -- the worker -------------------------------------------------------------------------


class RolloutWorker:
    """Ticks deployments forward and keeps every agent's retained desired state published."""

    def __init__(
        self,
        *,
        engine: Engine,
        mqtt_url: str,
        client_id: str,
        protocol: str = "5",
        tick_s: float = 1.0,
        grace: float = 3.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if protocol not in {"5", "3.1.1"}:
            raise ConfigError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
        if tick_s <= 0:
            raise ConfigError(f"rollout tick must be positive, not {tick_s}")
        broker = parse_mqtt_url(mqtt_url)
        self._host, self._port = broker.host, broker.port
        self._engine = engine
        self._tick_s = tick_s
        self._grace = grace
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._client = make_client(broker, client_id=client_id, protocol=protocol)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._held: dict[str, datetime] = {}  # what the broker holds retained, by agent
        self._sent: dict[str, tuple[datetime, float]] = {}  # published, not echoed yet
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def connected(self) -> bool:
        """Whether the control connection is up and subscribed to the desired topics."""
        return self._subscribed.is_set()

    def start(self) -> None:
        """Connect (retrying in the background) and start ticking."""
        if self._thread is not None:
            raise RuntimeError("RolloutWorker.start() called twice")
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the tick in hand, then disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()
        self._subscribed.clear()

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until subscribed to the desired topics; TimeoutError otherwise."""
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"rollout not connected to {self._host}:{self._port} in {timeout} s")

    def run_once(self) -> int:
        """One tick: advance deployments (committed), then publish what the broker lacks.

        Returns how many desired states were published.
        """
        now = self._clock()
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            if self._postgres:
                locked = session.scalar(
                    select(func.pg_try_advisory_xact_lock(AdvisoryLock.ROLLOUT_TICK))
                )
                if not locked:
                    return 0  # another replica is ticking
            else:
                exclude_ticks(session)  # SQLite: reads and writes in one write transaction
            tick(session, now=now, grace=self._grace)
        return self.publish_pending()

    def publish_pending(self) -> int:
        """Publish every desired state the broker does not hold as the database says it."""
        if not self._subscribed.is_set():
            return 0
        with Session(self._engine) as session:
            issued = desired_state_versions(session)
            now = time.monotonic()
            with self._lock:
                stale = [
                    agent_id
                    for agent_id, issued_at in issued
                    if self._held.get(agent_id) != issued_at
                    and not self._recently_sent(agent_id, issued_at, now)
                ]
            if not stale:
                return 0
            rows = desired_states(session, agent_ids=stale)
        for agent_id, row in rows.items():
            message = DesiredState.model_validate(row.payload)
            self._client.publish(
                str(Topic(agent_id, Channel.DESIRED)), encode(message), qos=1, retain=True
            )
            with self._lock:
                self._sent[agent_id] = (row.updated_at, now)
        return len(rows)

    def _recently_sent(self, agent_id: str, issued_at: datetime, now: float) -> bool:
        sent = self._sent.get(agent_id)
        return sent is not None and sent[0] == issued_at and now - sent[1] < RESEND_S

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug or a database outage must not end rollouts for good
                if not self._failing:
                    log.exception("rollout tick failed; retrying every tick")
                    self._failing = True
            else:
                if self._failing:
                    log.info("rollout ticks work again")
                    self._failing = False
            self._stop.wait(self._tick_s)

    # -- network thread ------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker %s:%s refused the rollout worker: %s", self._host, self._port, reason)
            return
        # The retained desired state of every agent comes back on this subscription: that
        # is how the worker learns what the broker holds.
        client.subscribe(subscription(Channel.DESIRED), qos=1)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("broker refused the rollout worker's subscription: %s", reasons)
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._subscribed.clear()
        with self._lock:
            # What the broker holds is learnt again from the retained messages on reconnect.
            self._held.clear()
            self._sent.clear()
        if not self._stop.is_set():
            log.warning("rollout worker lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            agent_id = Topic.parse(msg.topic).agent_id
        except ContractError:
            return
        if not msg.payload:  # the retained message was cleared
            with self._lock:
                self._held.pop(agent_id, None)
            return
        try:
            issued_at = DesiredState.model_validate_json(msg.payload).issued_at
        except ValidationError:
            log.warning("ignoring an invalid desired state on %s", msg.topic)
            return
        with self._lock:
            self._held[agent_id] = issued_at
            if self._sent.get(agent_id, (None, 0.0))[0] == issued_at:
                del self._sent[agent_id]
