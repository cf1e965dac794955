"""REST shapes (pydantic): what ``/api/v1`` returns. OpenAPI is generated from these.

Every REST class of the API lives here (DESIGN §2), each a few lines, but for two families
in their own modules: ``deployment_schemas.py`` (rollouts, their state lists) and
``signal_schemas.py`` (summaries' signals).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
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


# A typed dict, not a model: a week by agent is 8 400 points, and pydantic validates and
# serializes dicts several times faster than model instances (same schema, same JSON).
class AggregatePoint(TypedDict):
    """One non-empty bucket: its start (UTC), the metric's value and how many values made it."""

    ts: datetime
    value: Annotated[
        float | None, Field(description="null only when a sum or mean lies beyond the float range")
    ]
    count: Annotated[
        int, Field(description="events (with the attribute, if one is named) in the bucket")
    ]


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
LabelText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]


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


class PlacementPrices(BaseModel):
    """Prices the costs per month were computed with."""

    per_gb: float = Field(description="per GB moved from an agent to the cloud")
    cloud_cpu_hour: float = Field(description="per CPU-hour of inference in the cloud")
    edge_cpu_hour: float = Field(description="per CPU-hour on a gateway (0: already owned)")


class PipelinePlacement(BaseModel):
    """One agent's pipeline: the edge as it runs beside the cloud alternative, and a verdict."""

    agent_id: str
    pipeline: str
    model: str
    version: str
    windows_per_s: float
    raw_bytes_per_s: float = Field(description="read from the source: what the cloud would get")
    sent_bytes_per_s: float = Field(description="sent now: events and summaries")
    edge_inference_p50_ms: float | None
    edge_inference_p99_ms: float | None
    round_trip_ms: float | None = Field(description="the agent's end-to-end ack round trip")
    link_mbps: float | None = Field(description="the agent's link rate (see link_source)")
    link_source: Literal["configured", "measured", "default"] | None = Field(
        description="the agent's link_mbps label, the rate it measured from its acks while "
        "draining a backlog, or the request's default (None: no rate known)"
    )
    cloud_inference_ms: float | None = Field(description="the same model timed in the cloud")
    edge_cost_per_month: float
    cloud_cost_per_month: float | None
    verdict: Literal["edge", "cloud"]
    reason: str


class PlacementReport(BaseModel):
    """``GET /api/v1/placement``: where each pipeline's model should run, measured."""

    since: datetime
    until: datetime
    prices: PlacementPrices
    latency_budget_ms: float
    pipelines: list[PipelinePlacement]
