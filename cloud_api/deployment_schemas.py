"""REST shapes of deployments (``/api/v1/deployments``): what a rollout targets, how it moves
(canary, then the rest; the canary's model quality gate) and where it stands.

Kept apart from ``schemas.py`` (the rest of the REST classes), which would pass 500 lines
with them. Each state list is written once, here; the tuples elsewhere are their ``get_args``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from cloud_api.schemas import LabelText
from cloud_api.shadow_schemas import ShadowStrategy
from shared.topics import AGENT_ID_PATTERN

ActiveDeploymentState = Literal["shadow", "canary", "rolling"]
"""A deployment still moving: the rollout worker advances it every tick."""
DeploymentState = Literal[ActiveDeploymentState, "succeeded", "halted", "cancelled", "discarded"]
FailedTargetState = Literal["failed", "rolled_back"]
"""An agent of a deployment that refused the version, or swapped and went back."""
SettledTargetState = Literal["healthy", FailedTargetState, "cancelled"]
"""An agent of a deployment that will not move any more unless the deployment does."""
TargetState = Literal["pending", "updating", SettledTargetState]
Phase = Literal["canary", "rest"]
SafeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class QualityGate(BaseModel):
    """The model quality a canary must hold before the rest update: its alarm rate (incidents
    per 1000 windows), its escalation rate and, if bounded, its mean score, against a baseline
    over the same period (the agents still on the old version; the canary's own agents just
    before, when every agent is in the canary)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_windows: int = Field(
        default=100, ge=1, le=10**9,
        description="windows the canary must have scored in its healthy period before it is "
        "judged (and promoted); it waits for them up to agent_timeout_s",
    )  # fmt: skip
    max_alarm_ratio: float = Field(
        default=3.0, ge=1, le=1000,
        description="the canary's alarm rate may be at most this times the baseline's, and at "
        "least the baseline's divided by it (a model that stops alarming is out of bounds too)",
    )  # fmt: skip
    alarm_floor_per_1k: float = Field(
        default=2.0, ge=0, le=1000,
        description="alarm rates up to this many per 1000 windows count as quiet, never too high",
    )  # fmt: skip
    alarm_time_floor: float = Field(
        default=0.05, ge=0, le=1,
        description="a share of time in alarm up to this counts as quiet; above it, the canary's "
        "may be at most max_alarm_ratio times the baseline's (a model stuck on is one incident)",
    )  # fmt: skip
    max_escalation_ratio: float | None = Field(
        default=3.0, ge=1, le=1000,
        description="the canary's escalation rate (inputs sent to the cloud model per 1000 "
        "windows) may be at most this times the baseline's; null: not judged",
    )  # fmt: skip
    escalation_floor_per_1k: float = Field(
        default=5.0, ge=0, le=1000,
        description="escalation rates up to this many per 1000 windows are never too high",
    )  # fmt: skip
    max_score_shift: float | None = Field(
        default=None, gt=0, le=1e6,
        description="bound on how far the canary's mean score may move from the baseline's; "
        "null: not judged (a new model may score on another scale)",
    )  # fmt: skip


class DeploymentStrategy(BaseModel):
    """How a deployment moves: a canary share first, then the rest once the canary held; with
    ``kind: shadow``, every target first runs the version in shadow (``shadow``) and the canary
    starts only once it is promoted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["canary", "shadow"] = "canary"
    shadow: ShadowStrategy | None = Field(
        default=None, description="how the shadow runs (kind shadow; its defaults if null)"
    )

    canary_fraction: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="share of the targets updated first: ceil(fraction x targets), at least 1",
    )
    canary_healthy_s: float = Field(
        default=60.0,
        ge=0,
        le=7 * 24 * 3600,
        description="how long every canary must stay running and online before the rest update",
    )
    agent_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="an agent not running the version this long after it was asked fails",
    )
    quality: QualityGate | None = Field(
        default_factory=QualityGate,
        description="the canary's model quality against a baseline; null: errors only",
    )

    @model_validator(mode="before")
    @classmethod
    def _shadow_defaults(cls, data: Any) -> Any:
        """``kind: shadow`` without ``shadow`` runs with the shadow's defaults."""
        if isinstance(data, dict) and data.get("kind") == "shadow" and data.get("shadow") is None:
            return {**data, "shadow": {}}
        return data

    @model_validator(mode="after")
    def _shadow_with_its_kind(self) -> DeploymentStrategy:
        if self.kind == "canary" and self.shadow is not None:
            raise ValueError("'shadow' is given but 'kind' is 'canary': say kind: shadow")
        return self


class TargetShape(TypedDict, total=False):
    """A target as the API returns it: only the kind that was given."""

    agent_ids: list[str]
    labels: dict[str, str]


class DeploymentTarget(BaseModel):
    """Which agents: a list of ids, or a label selector (agents having every key=value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_ids: list[Annotated[str, StringConstraints(pattern=AGENT_ID_PATTERN)]] | None = Field(
        default=None, max_length=10_000
    )
    labels: dict[LabelText, LabelText] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _one_non_empty_kind(self) -> DeploymentTarget:
        if (self.agent_ids is None) == (self.labels is None):
            raise ValueError("give exactly one of 'agent_ids' and 'labels'")
        if self.agent_ids is not None and not self.agent_ids:
            raise ValueError("'agent_ids' is empty: name at least one agent")
        if self.labels is not None and not self.labels:
            raise ValueError("'labels' is empty: give at least one key=value")
        return self

    @model_serializer(mode="wrap")
    def _only_the_given_kind(self, handler: SerializerFunctionWrapHandler) -> TargetShape:
        data: dict[str, Any] = handler(self)
        shape = TargetShape()
        if data.get("agent_ids") is not None:
            shape["agent_ids"] = data["agent_ids"]
        if data.get("labels") is not None:
            shape["labels"] = data["labels"]
        return shape


class DeploymentIn(BaseModel):
    """``POST /api/v1/deployments``: roll ``model`` ``version`` out to ``pipeline`` of a target."""

    model_config = ConfigDict(extra="forbid")

    model: SafeName
    version: SafeName
    pipeline: SafeName
    target: DeploymentTarget
    strategy: DeploymentStrategy = DeploymentStrategy()


class DeploymentAgentOut(BaseModel):
    """One agent of a deployment: its phase, where it stands, what it runs and why it failed."""

    model_config = ConfigDict(from_attributes=True)

    agent_id: str
    phase: Phase
    state: TargetState
    running_version: str | None
    reason: str
    updated_at: datetime


class DeploymentCounts(BaseModel):
    """How many agents of a deployment are in each state."""

    pending: int = 0
    updating: int = 0
    healthy: int = 0
    failed: int = 0
    rolled_back: int = 0
    cancelled: int = 0


class DeploymentOut(BaseModel):
    """A deployment with every agent's state; ``reason`` says why it halted."""

    id: int
    model: str
    version: str
    pipeline: str
    state: DeploymentState
    reason: str
    created_at: datetime
    updated_at: datetime
    strategy: DeploymentStrategy
    target: DeploymentTarget
    counts: DeploymentCounts
    agents: list[DeploymentAgentOut]
