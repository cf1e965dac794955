"""REST shapes (pydantic): what ``/api/v1`` returns. OpenAPI is generated from these.

Over 400 lines: every REST class of the API lives here (DESIGN §2), each a few lines; the
state lists of deployments and of their agents are written here once, derived elsewhere.
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

from shared.signing import SignedManifest, TensorSpec
from shared.topics import AGENT_ID_PATTERN


class EventOut(BaseModel):
    """One stored event, as the edge reported it plus when the cloud received it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    pipeline: str
    kind: str
    state: str
    label: str
    score: float
    ts: datetime
    seq: int
    model_name: str
    model_version: str
    model_sha256: str
    attributes: dict[str, Any]
    received_at: datetime


class EventPage(BaseModel):
    """A page of events, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[EventOut]
    next_cursor: str | None = Field(description="null on the last page")


class ValidationIssue(BaseModel):
    """One way a request does not match its schema: where (``loc``) and why (``msg``)."""

    loc: list[str | int] = Field(description="e.g. ['query', 'since']: the parameter or field")
    msg: str
    type: str


class Problem(BaseModel):
    """Every refusal (4xx): ``detail`` says what is wrong, as a sentence or, for a request
    that does not match its schema (422), as one issue per parameter or field."""

    detail: str | list[ValidationIssue]


class ModelVersionOut(BaseModel):
    """The model a pipeline runs, as the agent reported it."""

    name: str
    version: str
    sha256: str


class PipelineOut(BaseModel):
    """One pipeline of an agent: its model and counters since the agent started."""

    name: str
    model: ModelVersionOut | None
    samples_in: int
    inferences: int
    events_out: int
    gated: int
    errors: int
    raw_bytes: int = 0
    sent_bytes: int = 0


class AgentOut(BaseModel):
    """An agent, online or offline with the reason (Last Will, stopped, heartbeat missed)."""

    agent_id: str
    state: Literal["online", "offline"]
    reason: str
    last_seen: datetime | None
    heartbeat_s: float
    status_ts: datetime | None
    agent_version: str
    uptime_s: float
    outbox_depth: int
    outbox_oldest_age_s: float
    pipelines: list[PipelineOut]


class BandwidthUsage(BaseModel):
    """What was read at the edge against what crossed the network, over some summaries."""

    summaries: int
    first_window_start: datetime | None
    last_window_end: datetime | None
    samples_in: int
    inferences: int
    gated: int
    events: int
    raw_bytes: int = Field(description="bytes the pipelines read from their sources")
    sent_bytes: int = Field(
        description="encoded bytes of the events and summaries they sent (no MQTT framing)"
    )
    saved_bytes: int = Field(description="raw_bytes - sent_bytes")
    ratio: float | None = Field(description="sent_bytes / raw_bytes; null when nothing was read")


class PipelineBandwidth(BandwidthUsage):
    """One pipeline of one agent."""

    agent_id: str
    pipeline: str


class FleetBandwidth(BandwidthUsage):
    """Every pipeline the report covers, added up."""

    agents: int
    pipelines: int


class BandwidthReport(BaseModel):
    """``GET /api/v1/stats/bandwidth``: per pipeline and for the fleet, from the summaries
    whose window starts in ``[since, until)``."""

    since: datetime | None
    until: datetime | None
    pipelines: list[PipelineBandwidth]
    total: FleetBandwidth


Bucket = Literal["minute", "hour", "day"]
Metric = Literal["count", "avg", "min", "max"]
GroupKey = Literal["agent_id", "pipeline", "label", "model_version", "kind"]
SeriesBucket = Literal["hour", "day"]
"""Buckets of summaries: a summary's window is a minute or more, so no minute buckets."""


class BandwidthPoint(BaseModel):
    """One bucket of summaries that had any: what was read against what was sent."""

    ts: datetime = Field(description="the bucket's start (UTC)")
    summaries: int
    raw_bytes: int
    sent_bytes: int
    saved_bytes: int = Field(description="raw_bytes - sent_bytes")
    ratio: float | None = Field(description="sent_bytes / raw_bytes; null when nothing was read")


class BandwidthSeries(BaseModel):
    """``GET /api/v1/stats/bandwidth/series``: summaries whose window starts in
    ``[since, until)``, added up per UTC hour or day of their window start, oldest first.

    Buckets without summaries are left out, as in ``/api/v1/aggregates``.
    """

    bucket: SeriesBucket
    since: datetime
    until: datetime
    agent_id: str | None
    pipeline: str | None
    points: list[BandwidthPoint]


class AggregatePoint(BaseModel):
    """One non-empty bucket: its start (UTC), the metric's value and how many values made it."""

    ts: datetime
    value: float | None = Field(
        description="null only when a sum or mean lies beyond the float range"
    )
    count: int = Field(description="events (with the attribute, if one is named) in the bucket")


class AggregateSeries(BaseModel):
    """The buckets of one group, oldest first; ``group`` is empty when nothing is grouped."""

    group: dict[str, str]
    points: list[AggregatePoint]


class AggregateReport(BaseModel):
    """``GET /api/v1/aggregates``: a metric of events in ``[since, until)``, bucketed in time."""

    bucket: Bucket
    metric: Metric
    field: str | None = Field(
        description="'score' or the attribute aggregated; null for a count of all events"
    )
    since: datetime
    until: datetime
    series: list[AggregateSeries]


class DeadLetterOut(BaseModel):
    """A message ingest could not apply, with the reason."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    topic: str
    payload: str
    payload_size: int
    reason: str
    received_at: datetime


class DeadLetterPage(BaseModel):
    """A page of dead letters, newest first; pass ``next_cursor`` back as ``cursor``."""

    items: list[DeadLetterOut]
    next_cursor: str | None = Field(description="null on the last page")


class Health(BaseModel):
    """Liveness of the parts the API depends on."""

    status: Literal["ok", "degraded"]
    database: bool
    ingest: Literal["connected", "disconnected", "disabled"]


class ModelVersionRecord(BaseModel):
    """A registered model version with the signed manifest an agent verifies before loading."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    sha256: str
    size: int
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    created_at: datetime
    signed_manifest: SignedManifest = Field(validation_alias="manifest")


class ModelVersionBrief(BaseModel):
    """One version in the list of a model's versions."""

    model_config = ConfigDict(from_attributes=True)

    version: str
    sha256: str
    size: int
    created_at: datetime


class ModelOut(BaseModel):
    """A model name with its versions, oldest first."""

    name: str
    versions: list[ModelVersionBrief]


class SigningKeyOut(BaseModel):
    """The public half of the cloud's manifest signing key, for agents to verify with."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    public_key: str = Field(description="base64 of the 32 raw public key bytes")


LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]
NO_NUL = r"^[^\x00]*$"
"""Text a body may carry: PostgreSQL refuses NUL in text and JSON."""
LabelValue = Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)]


class EnrollmentIn(BaseModel):
    """An agent to enroll; its id becomes its MQTT username and its topic level."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)


class AgentCredentialsOut(BaseModel):
    """An agent's credentials, returned once: the cloud keeps only a hash of the password."""

    agent_id: str
    username: str = Field(description="MQTT and HTTP Basic username (the agent id)")
    password: str = Field(description="shown once; rotate to get a new one")
    topics: str = Field(description="the only MQTT subtree these credentials may touch")
    public_key: SigningKeyOut = Field(description="verifies the model manifests it downloads")


class ApiKeyIn(BaseModel):
    """A new API key's name and scope (admin ⊃ operate ⊃ read)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    scope: Literal["read", "operate", "admin"]


class ApiKeyOut(BaseModel):
    """An API key without its secret."""

    model_config = ConfigDict(from_attributes=True)

    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new key with its token, which is shown this once."""

    token: str = Field(description="send as 'Authorization: Bearer <token>'")


# Each state list is written once, here; the tuples elsewhere are their ``get_args``.
ActiveDeploymentState = Literal["canary", "rolling"]
"""A deployment still moving: the rollout worker advances it every tick."""
DeploymentState = Literal[ActiveDeploymentState, "succeeded", "halted", "cancelled"]
FailedTargetState = Literal["failed", "rolled_back"]
"""An agent of a deployment that refused the version, or swapped and went back."""
SettledTargetState = Literal["healthy", FailedTargetState, "cancelled"]
"""An agent of a deployment that will not move any more unless the deployment does."""
TargetState = Literal["pending", "updating", SettledTargetState]
Phase = Literal["canary", "rest"]
SafeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
LabelText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]


class DeploymentStrategy(BaseModel):
    """How a deployment moves: a canary share first, then the rest once the canary held."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
