"""A canary judged on model quality: the comparisons (pure), the state machine with them, and
the figures read from SQL on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session

from cloud_api.db import create_db_engine, migrate
from cloud_api.deployment_schemas import QualityGate
from cloud_api.rollout.machine import advance
from cloud_api.rollout.quality import QualityFigures, judge_quality
from cloud_api.rollout.quality_figures import DeploymentQuality
from cloud_api.tables import EVENTS, SUMMARIES, EscalationRow
from tests.cloud.rollout.test_machine import (
    ON_OLD,
    T0,
    by_id,
    rollout,
    running_new,
    targets,
)

GATE = QualityGate(min_windows=100)
QUIET = QualityFigures(agents=4, windows=4000, alarms=2, alarm_s=30.0, period_s=600.0)


def figures(windows: int, alarms: int, alarm_s: float = 0.0, **more: Any) -> QualityFigures:
    return QualityFigures(1, windows, alarms, alarm_s, 600.0, **more)


@pytest.mark.parametrize(
    ("canary", "passed", "why"),
    [
        (figures(1000, 1, 5.0), True, "canary 1 alarms in 1000 windows"),
        (figures(1000, 40, 100.0), False, "alarm rate over 3x the baseline's"),
        # One incident that never ends: a model stuck on, which the rate alone misses.
        (figures(1000, 1, 600.0), False, "time in alarm over 3x the baseline's"),
        (figures(50, 30, 600.0), None, "50 of 100 canary windows"),
    ],
)
def test_the_canary_is_judged_against_its_baseline(
    canary: QualityFigures, passed: bool | None, why: str
) -> None:
    verdict = judge_quality(GATE, canary, QUIET)

    assert verdict.passed is passed
    assert why in verdict.reason


def test_a_model_that_stops_alarming_is_out_of_bounds_too() -> None:
    busy = QualityFigures(agents=4, windows=4000, alarms=80, alarm_s=240.0, period_s=600.0)

    verdict = judge_quality(GATE, figures(1000, 0), busy)

    assert verdict.passed is False
    assert "alarm rate under 1/3 of the baseline's" in verdict.reason
    assert "baseline 80 alarms in 4000 windows of 4 agent(s) (20.0/1k" in verdict.reason


def test_two_quiet_groups_are_alike_and_no_baseline_is_no_comparison() -> None:
    assert judge_quality(GATE, figures(1000, 1), figures(1000, 0)).passed is True
    verdict = judge_quality(GATE, figures(1000, 40), figures(10, 0))
    assert verdict.passed is True
    assert verdict.reason.startswith("no baseline to compare with: canary 40 alarms")


def test_the_mean_score_is_judged_only_when_the_gate_bounds_it() -> None:
    canary = figures(1000, 1, score_sum=900.0, score_count=1000)
    baseline = figures(1000, 1, score_sum=50.0, score_count=1000)
    assert judge_quality(GATE, canary, baseline).passed is True

    verdict = judge_quality(QualityGate(min_windows=100, max_score_shift=0.5), canary, baseline)
    assert verdict.passed is False
    assert "mean score moved by more than 0.5" in verdict.reason


def test_a_canary_that_escalates_far_more_than_its_baseline_is_out_of_bounds() -> None:
    """Unsure on many more inputs: it would send the cloud model (and its budget) far more."""
    baseline = figures(1000, 1, escalations=10)
    assert judge_quality(GATE, figures(1000, 1, escalations=25), baseline).passed is True
    verdict = judge_quality(GATE, figures(1000, 1, escalations=40), baseline)
    assert verdict.passed is False
    assert "escalation rate over 3x the baseline's" in verdict.reason
    assert "40.0/1k escalated" in verdict.reason
    quiet = figures(1000, 1, escalations=4)  # under the floor of 5 per 1000: never too high
    assert judge_quality(GATE, quiet, figures(1000, 1)).passed is True
    unbounded = QualityGate(min_windows=100, max_escalation_ratio=None)
    assert judge_quality(unbounded, figures(1000, 1, escalations=900), baseline).passed is True


class Fixed:
    """Figures a test chooses (the store reads them from SQL)."""

    def __init__(self, canary: QualityFigures, baseline: QualityFigures = QUIET) -> None:
        self.canary, self.baseline = canary, baseline
        self.asked: list[tuple[datetime, datetime]] = []

    def figures(self, since: datetime, until: datetime) -> tuple[QualityFigures, QualityFigures]:
        self.asked.append((since, until))
        return self.canary, self.baseline


def healthy_canary(quality: Fixed) -> Any:
    """Five agents, the canary healthy on the new version since T0 + 5 s, judged at T0 + 40 s."""
    plan = rollout(canary_healthy_s=30)
    step = advance(plan, targets(), {}, {"agent-0": None}, T0, quality)
    seen = {f"agent-{i}": ON_OLD for i in range(5)} | {"agent-0": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=5), quality)
    return plan, advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=40), quality)


def test_a_noisy_canary_is_halted_and_rolled_back_with_the_figures_in_the_reason() -> None:
    quality = Fixed(figures(1000, 40, 100.0))

    _, step = healthy_canary(quality)

    assert step.state == "halted"
    assert step.reason.startswith("canary model quality out of bounds: alarm rate over 3x")
    assert "canary 40 alarms in 1000 windows" in step.reason
    assert step.desired == {"agent-0": None}  # back to its configured model
    states = by_id(step.targets)
    assert states["agent-0"].state == "rolled_back"
    assert {states[f"agent-{i}"].state for i in range(1, 5)} == {"cancelled"}
    assert quality.asked == [(T0 + timedelta(seconds=5), T0 + timedelta(seconds=40))]


def test_a_good_canary_is_promoted_with_its_figures() -> None:
    _, step = healthy_canary(Fixed(figures(1000, 1, 5.0)))

    assert step.state == "rolling"
    assert step.reason.startswith("canary quality: canary 1 alarms in 1000 windows")
    assert sorted(step.desired) == ["agent-1", "agent-2", "agent-3", "agent-4"]


def test_a_canary_waits_for_enough_windows_then_times_out() -> None:
    quality = Fixed(figures(20, 0))
    plan, step = healthy_canary(quality)
    assert (step.state, step.reason) == (
        "canary",
        "judging model quality: 20 of 100 canary windows",
    )

    seen = {f"agent-{i}": ON_OLD for i in range(5)} | {"agent-0": running_new()}
    late = T0 + timedelta(seconds=5 + plan.strategy.agent_timeout_s)
    step = advance(plan, step.targets, seen, {}, late, quality)
    assert step.state == "halted"
    assert "only 20 of 100 canary windows after 120 s" in step.reason


def test_without_a_gate_only_errors_count() -> None:
    plan = rollout(canary_healthy_s=30)
    plan = type(plan)(plan.id, plan.version, plan.sha256, plan.state, plan.reason,
                      plan.strategy.model_copy(update={"quality": None}), plan.entry)  # fmt: skip
    quality = Fixed(figures(1000, 400, 600.0))
    step = advance(plan, targets(), {}, {}, T0, quality)
    seen = {f"agent-{i}": ON_OLD for i in range(5)} | {"agent-0": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=5), quality)
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=40), quality)
    assert step.state == "rolling"
    assert quality.asked == []


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def summary(agent: str, minute: int, version: str, windows: int, score: float) -> dict[str, Any]:
    start = T0 + timedelta(minutes=minute)
    return {
        "agent_id": agent, "pipeline": "spindle-vibration", "window_start": start,
        "window_end": start + timedelta(minutes=1), "samples_in": windows,
        "inferences": windows, "gated": 0, "events": 0, "events_by_label": {},
        "signals": {"score": {"min": 0.0, "mean": score, "max": 1.0, "count": windows}},
        "raw_bytes": 0, "sent_bytes": 0, "model_name": "vibration-anomaly",
        "model_version": version, "model_sha256": "0" * 64, "received_at": start,
    }  # fmt: skip


def escalation(agent: str, version: str, minute: float) -> EscalationRow:
    ts = T0 + timedelta(minutes=minute)
    return EscalationRow(
        id=str(uuid.uuid4()), agent_id=agent, pipeline="spindle-vibration", event_id=None,
        sample_id=None, edge_model=f"vibration-anomaly {version}", edge_label="imbalance",
        edge_score=0.6, ts=ts, answered_at=ts, outcome="answered", reason="", result={},
    )  # fmt: skip


def event(agent: str, seq: int, state: str, minute: float, version: str) -> dict[str, Any]:
    ts = T0 + timedelta(minutes=minute)
    return {
        "id": f"{agent}-{seq}", "agent_id": agent, "pipeline": "spindle-vibration",
        "kind": "anomaly", "state": state, "label": "imbalance", "score": 0.9, "ts": ts,
        "seq": seq, "model_name": "vibration-anomaly", "model_version": version,
        "model_sha256": "0" * 64, "attributes": {}, "received_at": ts,
    }  # fmt: skip


def test_the_figures_come_from_the_summaries_and_events_of_each_group(engine: Engine) -> None:
    """Canary c1 on 2.0.0: stuck in one incident since before the period. Baseline r1 and r2
    on 1.0.0: one short incident. Windows and events of other versions do not count."""
    summaries = [
        *(summary("c1", m, "2.0.0", 100, 0.9) for m in range(10)),
        summary("c1", 11, "1.0.0", 100, 0.1),  # after the period
        *(summary(r, m, "1.0.0", 100, 0.05) for r in ("r1", "r2") for m in range(10)),
    ]
    events = [
        event("c1", 0, "start", -1, "2.0.0"),  # open when the period begins
        event("r1", 0, "start", 2, "1.0.0"),
        event("r1", 1, "end", 2.5, "1.0.0"),
        event("r2", 0, "start", 3, "2.0.0"),  # another version: not the baseline's
    ]
    with engine.begin() as conn:
        conn.execute(insert(SUMMARIES), summaries)
        conn.execute(insert(EVENTS), events)
    sent = [("c1", "2.0.0", m / 4) for m in range(30)]
    sent += [("r1", "1.0.0", 1), ("r2", "1.0.0", 2), ("r2", "1.0.0", 3), ("r1", "1.0.0", 4)]
    sent += [("r2", "2.0.0", 5), ("c1", "2.0.0", 12)]  # another version; after the period
    with Session(engine) as session:
        session.add_all(escalation(agent, version, minute) for agent, version, minute in sent)
        session.commit()
    with Session(engine) as session:
        quality = DeploymentQuality(
            session, pipeline="spindle-vibration", model="vibration-anomaly", version="2.0.0",
            created_at=T0 - timedelta(minutes=5), canary=["c1"], rest=["r1", "r2"],
        )  # fmt: skip
        canary, baseline = quality.figures(T0, T0 + timedelta(minutes=10))

    assert (canary.agents, canary.windows, canary.alarms) == (1, 1000, 0)
    assert canary.alarm_share == 1.0
    assert canary.mean_score == pytest.approx(0.9)
    assert (baseline.agents, baseline.windows, baseline.alarms) == (2, 2000, 1)
    assert baseline.alarm_s == pytest.approx(30.0)
    assert baseline.mean_score == pytest.approx(0.05)
    assert (canary.escalations, baseline.escalations) == (30, 4)
    verdict = judge_quality(QualityGate(), canary, baseline)
    assert verdict.passed is False
    assert "time in alarm" in verdict.reason


def test_whether_incidents_were_open_is_one_query_for_any_number_of_agents(
    engine: Engine,
) -> None:
    """Agents o0..o3 entered the period in an open incident (their last start has no end);
    c0..c3 had theirs closed; q0..q3 never alarmed. The queries do not grow with the agents."""
    events = []
    for n in range(4):
        events += [event(f"o{n}", 0, "start", -3, "2.0.0"), event(f"o{n}", 1, "end", -2, "2.0.0")]
        events += [event(f"o{n}", 2, "start", -1, "2.0.0")]
        events += [event(f"c{n}", 0, "start", -3, "2.0.0"), event(f"c{n}", 1, "end", -1, "2.0.0")]
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), events)
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(args[2])

    def figures_of(canary: list[str]) -> QualityFigures:
        statements.clear()
        with Session(engine) as session:
            quality = DeploymentQuality(
                session, pipeline="spindle-vibration", model="vibration-anomaly",
                version="2.0.0", created_at=T0 - timedelta(minutes=5), canary=canary, rest=[],
            )  # fmt: skip
            return quality.figures(T0, T0 + timedelta(minutes=10))[0]

    sqlalchemy_event.listen(engine, "before_cursor_execute", counted)
    try:
        one = figures_of(["o0"])
        one_count = len(statements)
        many = figures_of([f"{kind}{n}" for kind in "ocq" for n in range(4)])
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", counted)

    assert len(statements) == one_count
    assert one.alarm_s == pytest.approx(600.0)
    assert many.alarm_s == pytest.approx(4 * 600.0)  # only the four open ones, each all along
    assert (many.agents, many.alarms) == (12, 0)
