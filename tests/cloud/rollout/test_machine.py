"""The rollout state machine, pure: canary, rolling, halting and cancelling without I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_api.deployment_schemas import DeploymentCounts, DeploymentStrategy, TargetState
from cloud_api.rollout.machine import (
    AgentTarget,
    Observation,
    Rollout,
    advance,
    cancel,
    split_canary,
)
from shared.errors import ContractError
from shared.messages import DesiredModel, ModelRef, UpdateState, UpdateStatus
from shared.signing import ModelManifest, SignedManifest

PIPELINE = "spindle-vibration"
OLD = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f2c" + "0" * 60)
NEW_SHA = "ab" * 32
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def entry(deployment_id: int, version: str = "2.0.0") -> DesiredModel:
    manifest = ModelManifest(name="vibration-anomaly", version=version, sha256=NEW_SHA, size=1,
                             inputs=[], outputs=[])  # fmt: skip
    return DesiredModel(
        pipeline=PIPELINE,
        deployment_id=deployment_id,
        manifest=SignedManifest(manifest=manifest, signature="", key_id=""),
        artifact_path=f"/api/v1/models/vibration-anomaly/versions/{version}/artifact",
    )


def rollout(state: str = "canary", **strategy: float) -> Rollout:
    values = {"canary_fraction": 0.2, "canary_healthy_s": 30.0, "agent_timeout_s": 120.0}
    values.update(strategy)
    return Rollout(
        id=7,
        version="2.0.0",
        sha256=NEW_SHA,
        state=state,  # type: ignore[arg-type]
        reason="",
        strategy=DeploymentStrategy.model_validate(values),
        entry=entry(7),
    )


def targets(count: int = 5, canary: int = 1) -> list[AgentTarget]:
    ids = [f"agent-{i}" for i in range(count)]
    return [
        AgentTarget(
            agent_id=a, phase="canary" if i < canary else "rest", state="pending", updated_at=T0
        )
        for i, a in enumerate(ids)
    ]


def running_new(online: bool = True) -> Observation:
    update = UpdateStatus(deployment_id=7, name="vibration-anomaly", version="2.0.0",
                          state="running", ts=T0)  # fmt: skip
    new = ModelRef(name="vibration-anomaly", version="2.0.0", sha256=NEW_SHA)
    return Observation(online=online, model=new, update=update)


def in_state(state: UpdateState, reason: str = "", deployment_id: int = 7) -> Observation:
    update = UpdateStatus(deployment_id=deployment_id, name="vibration-anomaly",
                          version="2.0.0", state=state, reason=reason, ts=T0)  # fmt: skip
    return Observation(online=True, model=OLD, update=update)


ON_OLD = Observation(online=True, model=OLD)


def by_id(step_targets: list[AgentTarget]) -> dict[str, AgentTarget]:
    return {t.agent_id: t for t in step_targets}


@pytest.mark.parametrize(
    ("count", "fraction", "expected"),
    [(5, 0.2, 1), (5, 0.6, 3), (5, 1.0, 5), (20, 0.2, 4), (3, 0.01, 1), (1, 0.5, 1), (10, 0.25, 3)],
)
def test_canary_count(count: int, fraction: float, expected: int) -> None:
    canary, rest = split_canary([f"a{i:02d}" for i in range(count)][::-1], fraction)
    assert len(canary) == expected
    assert canary + rest == sorted(f"a{i:02d}" for i in range(count))


@given(
    ids=st.sets(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=60),
    percent=st.integers(min_value=1, max_value=100),
)
def test_canary_is_the_first_sorted_ids_and_never_empty(ids: set[str], percent: int) -> None:
    canary, rest = split_canary(list(ids), percent / 100)
    assert canary + rest == sorted(ids)
    assert len(canary) == max(1, math.ceil(percent * len(ids) / 100))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_canary_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ContractError, match="canary fraction"):
        split_canary(["a"], fraction)


def test_first_tick_asks_only_the_canary_and_keeps_its_previous_entry() -> None:
    previous = entry(3, "1.5.0")
    step = advance(rollout(), targets(), {}, {"agent-0": previous}, T0)
    assert step.state == "canary"
    assert step.desired == {"agent-0": entry(7)}
    got = by_id(step.targets)
    assert got["agent-0"].state == "updating"
    assert got["agent-0"].previous == previous
    assert {got[f"agent-{i}"].state for i in range(1, 5)} == {"pending"}


def test_rest_waits_until_the_canary_was_healthy_long_enough() -> None:
    plan = rollout(canary_healthy_s=30)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {f"agent-{i}": ON_OLD for i in range(5)} | {"agent-0": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=5))
    assert by_id(step.targets)["agent-0"].state == "healthy"
    assert (step.state, step.desired) == ("canary", {})
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=34))
    assert (step.state, step.desired) == ("canary", {})  # healthy for 29 s only
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=35))
    assert step.state == "rolling"
    assert sorted(step.desired) == ["agent-1", "agent-2", "agent-3", "agent-4"]
    assert {t.state for t in step.targets if t.phase == "rest"} == {"updating"}

    seen = {f"agent-{i}": running_new() for i in range(5)}
    step = advance(
        replace_state(plan, "rolling"), step.targets, seen, {}, T0 + timedelta(seconds=60)
    )
    assert step.state == "succeeded"
    assert {t.state for t in step.targets} == {"healthy"}
    assert {t.running_version for t in step.targets} == {"2.0.0"}


def replace_state(plan: Rollout, state: str) -> Rollout:
    return Rollout(plan.id, plan.version, plan.sha256, state, plan.reason, plan.strategy,  # type: ignore[arg-type]
                   plan.entry)  # fmt: skip


def test_an_offline_canary_is_not_healthy() -> None:
    plan = rollout(canary_healthy_s=10)
    step = advance(plan, targets(), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    offline = Observation(
        online=False, model=running_new().model, offline_reason="heartbeat missed"
    )
    step = advance(plan, step.targets, {"agent-0": offline}, {}, T0 + timedelta(seconds=20))
    canary = by_id(step.targets)["agent-0"]
    assert (step.state, canary.state) == ("canary", "updating")
    assert canary.reason == "no longer healthy: offline (heartbeat missed)"
    assert step.desired == {}


@pytest.mark.parametrize(
    ("observed", "state", "reason"),
    [
        (in_state("failed", "sha256 mismatch: artifact tampered"), "failed",
         "sha256 mismatch: artifact tampered"),
        (in_state("rolled_back", "health window: 40 inference errors"), "rolled_back",
         "health window: 40 inference errors"),
    ],
)  # fmt: skip
def test_a_failing_canary_halts_and_every_canary_gets_its_previous_entry_back(
    observed: Observation, state: str, reason: str
) -> None:
    plan = rollout(canary_fraction=0.4)  # 2 of 5
    previous = entry(3, "1.5.0")
    step = advance(plan, targets(canary=2), {}, {"agent-1": previous}, T0)
    step = advance(plan, step.targets, {"agent-1": running_new()}, {}, T0 + timedelta(seconds=1))
    seen = {"agent-0": observed, "agent-1": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=2))
    assert step.state == "halted"
    assert step.reason == f"canary agent-0 {state}: {reason}"
    assert step.desired == {"agent-0": None, "agent-1": previous}
    got = by_id(step.targets)
    assert (got["agent-0"].state, got["agent-0"].reason) == (state, reason)
    assert got["agent-1"].state == "rolled_back"
    assert "canary agent-0 failed" in got["agent-1"].reason
    assert {got[f"agent-{i}"].state for i in range(2, 5)} == {"cancelled"}
    # Halted is final: nothing moves any more.
    later = advance(replace_state(plan, "halted"), step.targets, {}, {}, T0 + timedelta(hours=1))
    assert later.desired == {}
    assert later.targets == step.targets


def test_an_agent_that_never_runs_the_version_times_out_in_its_state() -> None:
    plan = rollout(agent_timeout_s=60)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {"agent-0": in_state("downloading")}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=59))
    assert step.state == "canary"
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=60))
    assert step.state == "halted"
    assert step.reason == "canary agent-0 failed: timed out in state downloading"
    assert step.desired == {"agent-0": None}


def test_an_update_report_about_another_deployment_is_not_this_ones() -> None:
    plan = rollout(agent_timeout_s=60)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {"agent-0": in_state("failed", "old news", deployment_id=6)}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=61))
    assert step.reason == "canary agent-0 failed: timed out in state pending"


def test_an_agent_that_already_runs_the_artifact_is_healthy() -> None:
    plan = rollout(canary_healthy_s=0)
    already = Observation(online=True, model=running_new().model)
    step = advance(plan, targets(count=1), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": already}, {}, T0 + timedelta(seconds=1))
    assert step.state == "succeeded"


def test_a_failure_in_the_rest_restores_that_agent_and_the_others_go_on() -> None:
    plan = rollout(canary_healthy_s=0)
    step = advance(plan, targets(count=3), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    assert step.state == "rolling"
    rolling = replace_state(plan, "rolling")
    seen = {
        "agent-0": running_new(),
        "agent-1": in_state("failed", "signature does not match"),
        "agent-2": in_state("watching"),
    }
    step = advance(rolling, step.targets, seen, {}, T0 + timedelta(seconds=2))
    assert (step.state, step.desired) == ("rolling", {"agent-1": None})
    seen["agent-2"] = running_new()
    step = advance(rolling, step.targets, seen, {}, T0 + timedelta(seconds=3))
    assert step.state == "halted"
    assert step.reason == "1 of 3 agents failed: agent-1 failed: signature does not match"
    assert step.desired == {}
    assert [t.state for t in step.targets] == ["healthy", "failed", "healthy"]


def test_cancel_stops_pending_and_updating_agents_only() -> None:
    plan = rollout()
    step = advance(plan, targets(count=3), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    done = cancel(step.targets, T0 + timedelta(seconds=2))
    assert [t.state for t in done] == ["healthy", "cancelled", "cancelled"]


def test_every_target_state_is_counted() -> None:
    """The API's counts have one field per state an agent of a deployment can be in."""
    assert list(DeploymentCounts.model_fields) == list(get_args(TargetState))
