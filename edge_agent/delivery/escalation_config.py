"""``escalate:`` of a pipeline: which edge results go to the cloud model, and how many.

An input whose score lies within ``band`` (where the edge model is least sure) is escalated:
published with the edge's answer on the agent's ``escalations`` topic for the pipeline's
cloud model to judge. ``budget_per_min`` is a token bucket on the agent (a burst of unsure
inputs sends at most that many a minute; the rest are dropped, counted). While the cloud
does not answer, ``offline`` says what becomes of new escalations: ``queue`` keeps up to
``queue_max`` of them waiting in the outbox (more are dropped), ``drop`` drops them at once.
The waiting are counted in the outbox: those an earlier run left count, and those the
outbox drops for age or size no longer do.
All pipelines together keep at most half the uplink's ``outbox.max_unacked_batches``
unanswered, so escalations never take the window the events need.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config_types import StrictConfig

OfflinePolicy = Literal["queue", "drop"]


class EscalateConfig(StrictConfig):
    """``escalate:`` of a pipeline: the band that escalates, the budget, the offline policy."""

    band: tuple[float, float] = Field(
        description="[lo, hi]: an edge result whose score lies within is escalated"
    )
    budget_per_min: int = Field(
        default=10, ge=1, le=60_000, description="at most this many escalations a minute"
    )
    offline: OfflinePolicy = Field(
        default="queue",
        description="while the cloud does not answer: queue (up to queue_max) or drop",
    )
    queue_max: int = Field(
        default=100, ge=1, le=100_000, description="escalations waiting for an answer, at most"
    )

    @model_validator(mode="after")
    def _band_in_order(self) -> EscalateConfig:
        if not self.band[0] <= self.band[1]:
            raise ValueError(f"band [lo, hi] needs lo <= hi, got {list(self.band)}")
        return self
