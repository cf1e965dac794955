"""A canary judged on model quality, not only on errors: pure comparisons, no SQL.

A version that stays healthy (running, online, no errors) can still be a bad model: one that
raises ten times the alarms, or never alarms. Before a canary is promoted, its figures over
its healthy window are compared with a baseline over the same period: the deployment's other
agents, still on the old version, or (when every agent is in the canary) the canary agents
themselves over as long a period just before the deployment asked them. The figures come from
what the agents send anyway: the windows their summaries count, the incidents their events
start, the inputs they escalate to the cloud model (the unsure ones), and the mean of the
summaries' ``score`` signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cloud_api.deployment_schemas import QualityGate


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """What a group of agents did over a period: windows scored, incidents started, and the
    count-weighted sum of the scores of those windows (from the summaries)."""

    agents: int
    windows: int
    alarms: int
    alarm_s: float = 0.0
    """Seconds the group's incidents were open within the period, summed over its agents."""
    period_s: float = 0.0
    score_sum: float = 0.0
    score_count: int = 0
    escalations: int = 0
    """Inputs the group sent to the cloud model (the escalations the cloud received)."""

    @property
    def alarms_per_1k(self) -> float:
        return 1000.0 * self.alarms / self.windows if self.windows else 0.0

    @property
    def alarm_share(self) -> float:
        """The share of the agents' time in alarm (a model stuck on is one long incident)."""
        total = self.agents * self.period_s
        return min(1.0, self.alarm_s / total) if total > 0 else 0.0

    @property
    def escalations_per_1k(self) -> float:
        return 1000.0 * self.escalations / self.windows if self.windows else 0.0

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.score_count if self.score_count else None

    def describe(self) -> str:
        mean = self.mean_score
        score = f", mean score {mean:.3f}" if mean is not None else ""
        sent = f", {self.escalations_per_1k:.1f}/1k escalated" if self.escalations else ""
        return (
            f"{self.alarms} alarms in {self.windows} windows of {self.agents} agent(s) "
            f"({self.alarms_per_1k:.1f}/1k, {self.alarm_share:.0%} of the time in alarm"
            f"{sent}{score})"
        )


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    """``passed`` None: too few canary windows to judge yet."""

    passed: bool | None
    reason: str


class QualityCheck(Protocol):
    """Where the figures come from (the store, over SQL): the canary's and its baseline's over
    ``[since, until)``."""

    def figures(self, since: datetime, until: datetime) -> tuple[QualityFigures, QualityFigures]:
        """(canary, baseline)."""
        ...


def judge_quality(
    gate: QualityGate, canary: QualityFigures, baseline: QualityFigures
) -> QualityVerdict:
    """Whether the canary's alarm rate, its time in alarm, its escalation rate (and its mean
    score, if the gate bounds it) stay within the gate's bounds of the baseline's; the figures
    of both are in the reason."""
    figures = f"canary {canary.describe()}; baseline {baseline.describe()}"
    if canary.windows < gate.min_windows:
        return QualityVerdict(None, f"{canary.windows} of {gate.min_windows} canary windows")
    if baseline.windows < gate.min_windows:
        # Nothing to compare with (a new pipeline, a silent fleet): the errors judged it.
        return QualityVerdict(True, f"no baseline to compare with: {figures}")
    rate, base = canary.alarms_per_1k, baseline.alarms_per_1k
    floor, ratio = gate.alarm_floor_per_1k, gate.max_alarm_ratio
    if rate > max(base * ratio, floor):
        return QualityVerdict(False, f"alarm rate over {ratio:g}x the baseline's: {figures}")
    if base > floor and rate < base / ratio:
        return QualityVerdict(False, f"alarm rate under 1/{ratio:g} of the baseline's: {figures}")
    if canary.alarm_share > max(baseline.alarm_share * ratio, gate.alarm_time_floor):
        return QualityVerdict(False, f"time in alarm over {ratio:g}x the baseline's: {figures}")
    escalation = gate.max_escalation_ratio
    if escalation is not None and canary.escalations_per_1k > max(
        baseline.escalations_per_1k * escalation, gate.escalation_floor_per_1k
    ):
        return QualityVerdict(
            False, f"escalation rate over {escalation:g}x the baseline's: {figures}"
        )
    shift = gate.max_score_shift
    mean, base_mean = canary.mean_score, baseline.mean_score
    if (
        shift is not None
        and mean is not None
        and base_mean is not None
        and abs(mean - base_mean) > shift
    ):
        return QualityVerdict(False, f"mean score moved by more than {shift:g}: {figures}")
    return QualityVerdict(True, figures)
