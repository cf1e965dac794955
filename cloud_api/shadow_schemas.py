"""REST shapes of shadow evaluation: how a ``strategy: shadow`` deployment runs its candidate
on the agents, the rule that promotes or discards it when the window ends, and the report.

The figures are computed in ``cloud_api.rollout.shadow`` (pure); these classes only carry them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class PromoteRule(BaseModel):
    """When the window ends, promote the candidate (into a canary of the same version) if every
    bound given holds, else discard it; a bound left null is not judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agreement_min: float | None = Field(
        default=None, ge=0, le=1,
        description="least share of shadowed inputs on which both models give the same label",
    )  # fmt: skip
    alarm_rate_max_ratio: float | None = Field(
        default=None, ge=1, le=1000,
        description="the candidate's alarm rate (windows in alarm per 1000) may be at most this "
        "times the serving model's (rates under alarm_floor_per_1k count as the floor)",
    )  # fmt: skip
    alarm_floor_per_1k: float = Field(
        default=2.0, ge=0, le=1000,
        description="alarm rates up to this many per 1000 windows count as quiet",
    )  # fmt: skip
    latency_p99_max_ratio: float | None = Field(
        default=None, gt=0, le=1000,
        description="the candidate's p99 inference time may be at most this times the serving "
        "model's (the worst agent's of each)",
    )  # fmt: skip


class ShadowStrategy(BaseModel):
    """How the candidate runs in shadow: which share of the inputs, within which CPU budget,
    for how long, and what decides when the window ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(default=1.0, gt=0, le=1, description="share of the inputs shadowed")
    cpu_budget: float = Field(
        default=0.5, gt=0, le=1,
        description="share of one core the candidate may use; over it inputs are skipped",
    )  # fmt: skip
    window_s: float = Field(
        default=300.0, gt=0, le=7 * 24 * 3600,
        description="how long each agent shadows, from when its candidate is loaded",
    )  # fmt: skip
    min_inputs: int = Field(
        default=100, ge=1, le=10**9,
        description="inputs the candidate must have scored (all agents) for the rule to promote",
    )  # fmt: skip
    promote_if: PromoteRule | None = Field(
        default=None,
        description="promote or discard automatically when the window ends; null: an operator "
        "decides (POST .../shadow/promote or .../shadow/discard)",
    )


class ShadowFiguresOut(BaseModel):
    """The candidate against the serving model over the same inputs, on one agent or all."""

    inputs_seen: int
    inputs_shadowed: int
    skipped: int
    """Inputs not shadowed: the share, the CPU budget, a full queue or a candidate error."""
    agreement: float | None
    """Share of shadowed inputs with the same label from both models."""
    score_correlation: float | None
    """Pearson's r of the two scores (all agents: the lowest agent's)."""
    serving_alarm_rate_per_1k: float | None
    candidate_alarm_rate_per_1k: float | None
    serving_alarms: int
    candidate_alarms: int
    """Incidents the pipeline's filters would have started on each model's scores."""
    serving_p50_s: float | None
    serving_p99_s: float | None
    candidate_p50_s: float | None
    candidate_p99_s: float | None


class ShadowAgentOut(BaseModel):
    """One agent's shadow: where it stands and its figures."""

    agent_id: str
    state: str
    reason: str
    started_at: datetime | None
    updated_at: datetime
    figures: ShadowFiguresOut


class ShadowOut(BaseModel):
    """``GET /api/v1/deployments/{id}/shadow``: the deployment's shadow report."""

    deployment_id: int
    state: str
    reason: str
    strategy: ShadowStrategy
    figures: ShadowFiguresOut | None
    """Over every agent's latest report (None before the first)."""
    agents: list[ShadowAgentOut]
