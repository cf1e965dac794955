"""Shadow deployments, pure: each agent's state from its report, the figures over agents and
what the end of the window decides."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cloud_api.deployment_schemas import DeploymentStrategy
from cloud_api.rollout.shadow import agent_state, broken_bounds, figures, outcome, window_over
from cloud_api.shadow_schemas import PromoteRule, ShadowStrategy
from shared.messages import (
    DesiredModel,
    DesiredShadow,
    DesiredState,
    ModelRef,
    ShadowReport,
    encode,
)
from shared.signing import ModelManifest, SignedManifest

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
CANDIDATE = ModelRef(name="vibration-anomaly", version="1.1.0", sha256="ab" * 32)


def report(state: str = "complete", **values: Any) -> ShadowReport:
    base: dict[str, Any] = {
        "deployment_id": 3, "model": CANDIDATE, "state": state, "started_at": T0,
        "window_s": 60.0, "inputs_seen": 100, "inputs_shadowed": 100, "label_matches": 98,
        "serving_alarm_windows": 2, "candidate_alarm_windows": 3, "serving_p99_s": 0.001,
        "candidate_p99_s": 0.0012, "score_correlation": 0.95,
    }  # fmt: skip
    base.update(values)
    return ShadowReport.model_validate(base)


def test_agent_states_follow_their_reports_and_time_out() -> None:
    later = T0 + timedelta(seconds=30)
    assert agent_state("updating", report("refused", reason="input [1024]"), since=T0, now=later,
                       timeout_s=60) == ("failed", "input [1024]")  # fmt: skip
    assert agent_state("updating", report("running"), since=T0, now=later, timeout_s=60) == (
        "healthy", "shadowing",
    )  # fmt: skip
    assert agent_state("healthy", report(), since=T0, now=later, timeout_s=60) == (
        "healthy", "window complete",
    )  # fmt: skip
    assert agent_state("updating", None, since=T0, now=later, timeout_s=60) == ("updating", "")
    late = T0 + timedelta(seconds=61)
    assert agent_state("updating", None, since=T0, now=late, timeout_s=60) == (
        "failed", "timed out in state no shadow report",
    )  # fmt: skip
    # Running, but its window (60 s) plus the timeout (60 s) has passed without completing.
    stuck = T0 + timedelta(seconds=121)
    state, reason = agent_state("healthy", report("running"), since=T0, now=stuck, timeout_s=60)
    assert state == "failed"
    assert "not complete" in reason


def test_the_window_is_over_when_every_agent_failed_or_completed() -> None:
    assert window_over([("healthy", report()), ("failed", None)])
    assert not window_over([("healthy", report()), ("healthy", report("running"))])
    assert not window_over([("updating", None)])


def test_figures_add_counts_and_take_the_worst_agent() -> None:
    f = figures([report(), report(label_matches=90, candidate_p99_s=0.005, score_correlation=0.5)])
    assert (f.inputs_seen, f.inputs_shadowed, f.skipped) == (200, 200, 0)
    assert f.agreement == pytest.approx(188 / 200)
    assert f.candidate_alarm_rate_per_1k == pytest.approx(30.0)
    assert f.serving_alarm_rate_per_1k == pytest.approx(20.0)
    assert f.candidate_p99_s == 0.005
    assert f.score_correlation == 0.5


RULE = PromoteRule(agreement_min=0.9, alarm_rate_max_ratio=3.0, latency_p99_max_ratio=2.0)


def test_a_candidate_within_every_bound_is_promoted() -> None:
    decided = outcome(ShadowStrategy(promote_if=RULE, min_inputs=100), [report()], failed=0)
    assert decided.action == "promote"
    assert decided.reason.startswith("promote_if met: 100 of 100 inputs shadowed, agreement 0.980")


def test_a_candidate_that_alarms_on_everything_is_discarded_with_the_figures() -> None:
    noisy = report(candidate_alarm_windows=100, label_matches=2)
    decided = outcome(ShadowStrategy(promote_if=RULE), [noisy], failed=1)
    assert decided.action == "discard"
    assert decided.reason.startswith(
        "promote_if not met: agreement 0.020 < 0.9; alarm rate 1000.0/1k > 3 x 20.0/1k ("
    )
    assert decided.reason.endswith("; 1 agent(s) failed)")


def test_alarm_rates_under_the_floor_count_as_quiet() -> None:
    quiet = report(serving_alarm_windows=0, candidate_alarm_windows=0)
    assert broken_bounds(RULE, figures([quiet])) == []
    a_few = report(serving_alarm_windows=0, candidate_alarm_windows=1)  # 10/1k > 3 x 2/1k
    assert broken_bounds(RULE, figures([a_few])) == ["alarm rate 10.0/1k > 3 x 2.0/1k"]


def test_too_few_inputs_no_rule_and_no_complete_agent() -> None:
    few = outcome(ShadowStrategy(promote_if=RULE, min_inputs=500), [report()], failed=0)
    assert few.action == "discard"
    assert few.reason.startswith("only 100 inputs shadowed (min_inputs 500)")
    waiting = outcome(ShadowStrategy(), [report()], failed=0)
    assert waiting.action == "wait"
    assert waiting.reason.endswith("; promote or discard")
    nobody = outcome(ShadowStrategy(promote_if=RULE), [], failed=2)
    assert (nobody.action, nobody.reason) == (
        "discard", "no agent completed its shadow window (2 failed)",
    )  # fmt: skip


def test_the_strategy_says_shadow_with_its_kind() -> None:
    assert DeploymentStrategy(kind="shadow").shadow == ShadowStrategy()
    assert DeploymentStrategy().shadow is None
    with pytest.raises(ValidationError, match="say kind: shadow"):
        DeploymentStrategy.model_validate({"shadow": {"window_s": 10}})


def test_a_desired_state_says_shadows_only_when_it_asks_for_one() -> None:
    plain = DesiredState(agent_id="press-1", issued_at=T0)
    # Agents that predate shadows forbid unknown keys: without a shadow, nothing new is sent.
    assert "shadows" not in json.loads(encode(plain))
    manifest = ModelManifest(name="vibration-anomaly", version="1.1.0", sha256="ab" * 32, size=1,
                             inputs=[], outputs=[])  # fmt: skip
    entry = DesiredModel(
        pipeline="spindle", deployment_id=3,
        manifest=SignedManifest(manifest=manifest, signature="", key_id=""), artifact_path="/a",
    )  # fmt: skip
    shadow = DesiredShadow(model=entry, share=0.5, window_s=60.0)
    asked = DesiredState(agent_id="press-1", issued_at=T0, shadows=[shadow])
    assert DesiredState.model_validate_json(encode(asked)) == asked
    with pytest.raises(ValidationError, match="more than one shadow for a pipeline"):
        DesiredState(agent_id="press-1", issued_at=T0, shadows=asked.shadows * 2)
