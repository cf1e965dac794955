"""The REST shapes of cloud models, escalations and their fleet figures."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.fields import Label, Name

Outcome = Literal["answered", "refused"]


class CloudModelIn(BaseModel):
    """Which registered version answers a pipeline's escalations."""

    model_config = ConfigDict(extra="forbid")

    model: Name
    version: Name
    normal_label: Label | None = Field(
        default=None,
        description="a classifier's healthy label: its score is then 1 - p(normal), as on the edge",
    )


class CloudModelOut(CloudModelIn):
    pipeline: Name
    task: str
    labels: list[str]
    updated_at: datetime
    updated_by: str


class EscalationOut(BaseModel):
    """One escalation and the cloud's answer."""

    id: str
    agent_id: str
    pipeline: str
    event_id: str | None
    sample_id: str | None
    edge_model: str
    edge_label: str
    edge_score: float
    cloud_model: str | None
    cloud_label: str | None
    cloud_score: float | None
    agree: bool | None
    ts: datetime
    answered_at: datetime
    outcome: Outcome
    reason: str


class EscalationPage(BaseModel):
    items: list[EscalationOut]
    next_cursor: str | None


class PipelineEscalationStats(BaseModel):
    """One agent's pipeline: what it escalated, how the cloud answered, and what its last
    status says of its collection and its escalation budget."""

    agent_id: str
    pipeline: str
    escalations: int
    answered: int
    refused: int
    agreed: int
    agreement: float | None = Field(description="agreed / answered; null with no answer")
    rate_per_min: float = Field(description="escalations per minute over the window")
    status: dict[str, int | dict[str, int]] = Field(
        description="from the agent's last status: spool_depth, samples_kept (by reason), "
        "sample_bytes_uploaded and the escalation counters it reports (budget drops, queue)"
    )


class EscalationStats(BaseModel):
    since: datetime
    window_s: float
    pipelines: list[PipelineEscalationStats]
