"""Wire messages between agents and the cloud (JSON over MQTT), validated by pydantic v2.

Every message carries ``schema`` (the contract version). Edge-side messages forbid unknown
keys, so a typo on a gateway is an error and never a silently dropped field. Fields are the
strict types of ``shared.fields``: no coercion, finite floats, 64-bit integers, text that
PostgreSQL can hold, times within 1970..9999, bounded sizes. What a message accepts, SQLite
and PostgreSQL store.

Over 400 lines: the one wire contract, kept whole so both sides read it in one place.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    StringConstraints,
    model_serializer,
    model_validator,
)

from shared.fields import (
    INT64_MAX,
    Attributes,
    Count,
    EventId,
    FiniteFloat,
    HeartbeatSeconds,
    Label,
    OverlayJson,
    Reason,
    RowId,
    SafeText,
    Score,
    Seconds,
    SignalName,
    UtcDatetime,
)
from shared.fields import AgentId as AgentId
from shared.fields import AttributeValue as AttributeValue
from shared.fields import Name as Name
from shared.fields import Sha256 as Sha256
from shared.signing import SignedManifest

SCHEMA_VERSION: Literal[1] = 1
MAX_EVENTS_PER_BATCH = 1000
MAX_SUMMARY_LABELS = 256
MAX_SUMMARY_SIGNALS = 32
MAX_PIPELINES = 64
MAX_LINK_MBPS = 1e6
"""The largest link rate an agent reports (1 Tbit/s)."""


def _schema_version(value: object) -> object:
    if type(value) is not int:
        raise ValueError(f"schema must be the integer {SCHEMA_VERSION}")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_schema_version)]
BatchId = EventId
"""A batch is named like an event: a UUIDv7 made by the agent when it sends the batch."""
EventState = Literal["start", "update", "end", "instant"]


def new_event_id() -> str:
    """A globally unique, time-ordered id (UUIDv7 layout: 48-bit ms clock, 74 random bits).

    Python 3.11 has no ``uuid.uuid7``; time order keeps the cloud's primary-key index
    append-mostly.
    """
    ms = time.time_ns() // 1_000_000
    rand = _ID_BITS.getrandbits(74)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 62) << 64
    text = f"{value | 0b10 << 62 | rand & ((1 << 62) - 1):032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_ID_BITS = random.Random(os.urandom(32))
"""The random bits of event ids: a generator of its own, seeded from the OS (one system call
per process, not one per event: ids are made on the pipelines' hot path), and seeded again in
a forked child, which must not repeat its parent's ids. No one else seeds it."""
os.register_at_fork(after_in_child=lambda: _ID_BITS.seed(os.urandom(32)))


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind of time on the wire)."""
    return datetime.now(UTC)


class _EdgeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelRef(_EdgeMessage):
    """Which model produced a result: name, version and the sha256 of its ONNX file."""

    name: Name
    version: Name
    sha256: Sha256


class Event(_EdgeMessage):
    """A meaningful result at the edge; ``id`` is fixed when it is created and never changes."""

    id: EventId
    pipeline: Name
    kind: Name
    state: EventState
    label: Label
    score: Score
    ts: UtcDatetime
    seq: Count
    model: ModelRef
    attributes: Attributes = Field(default_factory=dict)


class EventBatch(_EdgeMessage):
    """What an agent publishes on ``events``: one MQTT message, many events.

    ``batch_id`` is what the cloud acknowledges on ``acks`` once the batch is committed; an
    agent deletes the events from its outbox only then (``None`` from agents that predate
    end-to-end acknowledgement: nothing is acked to them).
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    batch_id: BatchId | None = None
    sent_at: UtcDatetime
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


UpdateOutcome = Literal["running", "failed", "rolled_back"]
"""How an update ended: the states after which the agent waits for the next desired state."""
UpdateState = Literal["downloading", "verifying", "loading", "self_test", "watching", UpdateOutcome]
"""Where an agent's update of one pipeline stands.

``downloading`` -> ``verifying`` (sha256 and signature) -> ``loading`` -> ``self_test``
(golden input) -> swap -> ``watching`` (health window) -> ``running``. ``failed``: refused
before the swap (the old model never stopped). ``rolled_back``: swapped, then the health
window failed and the previous model is back. ``reason`` says why for the last two."""


class UpdateStatus(_EdgeMessage):
    """The last update an agent attempted on one pipeline, as it reports it in ``status``."""

    deployment_id: RowId | None = None
    name: Name
    version: Name
    state: UpdateState
    reason: Reason = ""
    ts: UtcDatetime


ShadowState = Literal["installing", "running", "complete", "refused"]
"""Where a shadow candidate stands: ``installing`` (downloaded, verified, loaded and self-tested
like an update), ``running`` (it sees the pipeline's inputs), ``complete`` (its window is over:
the figures are final), ``refused`` (it never ran; ``reason`` says why)."""
Share = Annotated[FiniteFloat, Field(gt=0, le=1)]


class ShadowReport(_EdgeMessage):
    """A candidate run beside a pipeline's serving model over a shadow window: agreement,
    latency and alarm rates on the same inputs. It never emits events or actions.

    ``inputs_seen`` counts the inputs the serving model scored while the window was open; each
    was shadowed, or skipped by the share, the CPU budget or a full queue. A window is in alarm
    when its score reaches the model's threshold; ``*_alarms`` count the incidents the pipeline's
    own filters would have started on each model's scores.
    """

    deployment_id: RowId | None = None
    model: ModelRef
    """The candidate."""
    state: ShadowState
    reason: Reason = ""
    started_at: UtcDatetime | None = None
    window_s: Seconds = 0.0
    inputs_seen: Count = 0
    inputs_shadowed: Count = 0
    skipped_share: Count = 0
    skipped_budget: Count = 0
    dropped_full: Count = 0
    errors: Count = 0
    label_matches: Count = 0
    """Shadowed inputs on which both models gave the same label (normal, or the same fault)."""
    score_correlation: Annotated[FiniteFloat, Field(ge=-1, le=1)] | None = None
    """Pearson correlation of the two models' scores (None: fewer than 2 inputs, or constant)."""
    serving_alarm_windows: Count = 0
    candidate_alarm_windows: Count = 0
    serving_alarms: Count = 0
    candidate_alarms: Count = 0
    serving_p50_s: Seconds | None = None
    serving_p99_s: Seconds | None = None
    candidate_p50_s: Seconds | None = None
    candidate_p99_s: Seconds | None = None


class PipelineStatus(_EdgeMessage):
    """What one pipeline runs and what it has done since the agent started."""

    name: Name
    model: ModelRef | None
    samples_in: Count
    inferences: Count
    events_out: Count
    gated: Count = 0
    errors: Count = 0
    raw_bytes: Count = 0
    sent_bytes: Count = 0
    filtered: Count = 0
    """Events the pipeline's report filters held back (rate limit, dedup, intervals...)."""
    update: UpdateStatus | None = None
    """The pipeline's last model update (None if it never received a desired version)."""
    provider: Name | None = None
    """The execution provider its model runs on (``cpu``, ``cuda``...)."""
    inference_p50_s: Seconds | None = None
    """Median time of one window's inference over the recent ones (None before the first)."""
    inference_p99_s: Seconds | None = None
    samples_kept: dict[Name, Count] = Field(default_factory=dict, max_length=8)
    """Raw inputs its ``collect:`` policy kept, by reason (random, band, event, escalated)."""
    samples_capped: Count = 0
    """Inputs a collection rule wanted that the per-minute or per-day cap refused."""
    spool_depth: Count = 0
    """Its samples waiting in the agent's spool for upload."""
    samples_uploaded: Count = 0
    sample_bytes_uploaded: Count = 0
    escalated: Count = 0
    """Inputs its ``escalate:`` band sent to the cloud model (put in the outbox)."""
    escalations_answered: Count = 0
    escalations_agreed: Count = 0
    """Answered escalations whose cloud label was the edge's."""
    escalations_dropped_budget: Count = 0
    escalations_dropped_offline: Count = 0
    """Dropped while the cloud did not answer (``offline: drop``, or too many unanswered)."""
    escalations_queued: Count = 0
    """Escalated while the uplink was offline (they wait in the outbox)."""
    escalations_refused: Count = 0
    """Refused by the cloud (any reason), or not sendable here (privacy policy, size)."""
    shadow: ShadowReport | None = None
    """The candidate it runs in shadow, and how it compares (None: no shadow asked)."""


class ConfigOverlay(_EdgeMessage):
    """What the cloud publishes, retained, on an agent's ``config`` topic.

    ``overlay`` is the whole remote configuration (a key it leaves out takes the value of the
    agent's own file again); ``version`` grows with every change an operator makes.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    version: RowId
    issued_at: UtcDatetime
    overlay: OverlayJson = Field(default_factory=dict)


class ConfigStatus(_EdgeMessage):
    """Where an agent's remote configuration stands, as it reports it in ``status``."""

    desired_version: RowId | None = None
    """The last overlay version the agent received (applied or refused)."""
    applied_version: RowId | None = None
    """The overlay version in effect (None: the file's configuration only)."""
    applied: OverlayJson = Field(default_factory=dict)
    """The overlay in effect."""
    refused: Reason = ""
    """Why ``desired_version`` was refused ("" when it is the one applied)."""


class AgentStatus(_EdgeMessage):
    """The retained heartbeat on ``status``; the Last Will sets ``state`` to ``offline``."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    state: Literal["online", "offline"]
    reason: Annotated[str, Strict(), StringConstraints(max_length=256), SafeText] = ""
    ts: UtcDatetime
    agent_version: Annotated[str, Strict(), StringConstraints(max_length=32), SafeText] = ""
    uptime_s: Seconds = 0.0
    heartbeat_s: HeartbeatSeconds = 0.0
    """How often the agent says it is online (0: not said, as in the Last Will)."""
    pipelines: list[PipelineStatus] = Field(default_factory=list, max_length=MAX_PIPELINES)
    outbox_depth: Count = 0
    outbox_oldest_age_s: Seconds = 0.0
    unacked_batches: Count = 0
    """Batches published and not yet acknowledged by the cloud (waiting for ``acks``)."""
    ack_rtt_p50_s: Seconds | None = None
    """Median edge -> cloud -> edge round trip (publish to the cloud's ack) of recent batches."""
    ack_rtt_p99_s: Seconds | None = None
    link_mbps_measured: Annotated[FiniteFloat, Field(gt=0, le=MAX_LINK_MBPS)] | None = None
    """Mbit/s the cloud acknowledged while the agent drained a backlog (None: the link was
    never the limit, so the agent does not know its capacity)."""
    spool_depth: Count = 0
    """Samples waiting in the spool for upload (every pipeline's)."""
    spool_bytes: Count = 0
    spool_dropped: Count = 0
    """Samples the spool dropped unsent (oldest first) to stay within its bounds."""
    config: ConfigStatus | None = None
    """Where the agent's remote configuration stands (None from agents without it)."""


class SignalStats(_EdgeMessage):
    """One numeric signal over a summary window: enough for a trend line and its envelope."""

    min: FiniteFloat
    mean: FiniteFloat
    max: FiniteFloat
    count: Annotated[Count, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> SignalStats:
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"need min <= mean <= max, got {self.min}, {self.mean}, {self.max}")
        return self


class PipelineSummary(_EdgeMessage):
    """What one pipeline did in one window of ``summary_interval_s``: one per ``summary`` message.

    It says why an agent is quiet (samples read, nothing worth an event) and what the edge
    saved: ``raw_bytes`` is what the pipeline read from its source in the window (windows x
    values x 4 for float32 sensors, frame bytes for cameras); ``sent_bytes`` is the encoded
    JSON of the events it handed to the outbox in the window (each event as it appears inside
    an ``EventBatch``, without the batch envelope shared with other pipelines) plus the encoded
    size of its previous summary (a summary cannot contain its own size). MQTT and TCP framing
    and retransmissions are not counted. Windows of one pipeline are contiguous, so
    ``(agent_id, pipeline, window_start)`` identifies a summary and redelivery is harmless.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    batch_id: BatchId | None = None
    """What the cloud acknowledges on ``acks`` (set by the outbox when it stores the summary)."""
    pipeline: Name
    window_start: UtcDatetime
    window_end: UtcDatetime
    samples_in: Count
    inferences: Count
    gated: Count = 0
    events_by_label: dict[Label, Count] = Field(default_factory=dict, max_length=MAX_SUMMARY_LABELS)
    """Events by label; their sum (the cloud's ``events`` column) fits in 64 bits too."""
    signals: dict[SignalName, SignalStats] = Field(
        default_factory=dict, max_length=MAX_SUMMARY_SIGNALS
    )
    raw_bytes: Count
    sent_bytes: Count
    model: ModelRef

    @model_validator(mode="after")
    def _window_in_order(self) -> PipelineSummary:
        if self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        if sum(self.events_by_label.values()) > INT64_MAX:
            raise ValueError("events_by_label adds up to more than a 64-bit integer holds")
        return self


class DesiredModel(_EdgeMessage):
    """The model the cloud wants one pipeline to run.

    ``manifest`` is signed by the cloud; the agent checks it against its configured public key
    and the artifact against the manifest's sha256. ``artifact_path`` is relative to the
    agent's configured cloud API URL (``/api/v1/models/{name}/versions/{version}/artifact``).
    """

    pipeline: Name
    deployment_id: RowId | None = None
    manifest: SignedManifest
    artifact_path: Annotated[
        str, Strict(), StringConstraints(pattern=r"^/[A-Za-z0-9_./-]*$", max_length=512)
    ]


class DesiredShadow(_EdgeMessage):
    """A candidate the cloud wants one pipeline to run in shadow beside its serving model.

    ``model`` is checked and loaded like an update. The candidate sees ``share`` of the inputs
    while it uses at most ``cpu_budget`` of one core, for ``window_s`` seconds.
    """

    model: DesiredModel
    share: Share = 1.0
    cpu_budget: Share = 0.5
    window_s: Annotated[Seconds, Field(gt=0)]


class DesiredState(_EdgeMessage):
    """What the cloud publishes, retained, on an agent's ``desired`` topic.

    It is the whole desired state: a pipeline not listed runs the model of the agent's own
    configuration (that is how a rollback to the configured model is said).
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    issued_at: UtcDatetime
    pipelines: list[DesiredModel] = Field(default_factory=list, max_length=MAX_PIPELINES)
    shadows: list[DesiredShadow] = Field(default_factory=list, max_length=MAX_PIPELINES)
    """Candidates to run in shadow, one per pipeline at most (absent: none)."""

    @model_serializer(mode="wrap")
    def _shadows_only_when_asked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Agents that predate shadows forbid unknown keys: a state without one stays as it was.
        data: dict[str, Any] = handler(self)
        if not data.get("shadows"):
            data.pop("shadows", None)
        return data

    @model_validator(mode="after")
    def _one_shadow_per_pipeline(self) -> DesiredState:
        names = [s.model.pipeline for s in self.shadows]
        if len(names) != len(set(names)):
            raise ValueError(f"more than one shadow for a pipeline: {sorted(names)}")
        return self


BatchOutcome = Literal["stored", "rejected"]
"""``stored``: committed (or already stored before: a resend). ``rejected``: the batch is in the
cloud's dead letters with ``reason``; sending it again cannot help, so the agent drops it."""


class BatchAck(_EdgeMessage):
    """The cloud's word on one batch (an ``EventBatch`` or a ``PipelineSummary``)."""

    batch_id: BatchId
    outcome: BatchOutcome
    reason: Reason = ""


class Acks(_EdgeMessage):
    """What ingest publishes (QoS 1) on an agent's ``acks`` after a transaction commits.

    This, not the broker's PUBACK, is what lets an agent delete rows from its outbox: a
    broker that lost its subscribers in a crash still answers PUBACK to a publish it drops.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    acks: list[BatchAck] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


def encode(message: BaseModel) -> bytes:
    """Serialise a wire message as compact JSON with its aliases (``schema``)."""
    return message.model_dump_json(by_alias=True).encode()


def encode_event_batch(
    agent_id: str, batch_id: str, sent_at: datetime, events: list[bytes]
) -> bytes:
    """``encode(EventBatch(...))`` from events already encoded (as an outbox stores them).

    The same bytes, without decoding and validating every event again: the envelope is
    pydantic's own serialisation, the events are spliced into its empty list.
    """
    envelope = EventBatch.model_construct(
        agent_id=agent_id, batch_id=batch_id, sent_at=sent_at, events=[]
    )
    head = encode(envelope)
    if not head.endswith(b"[]}"):
        raise ValueError("an EventBatch must end with its events")
    return head[:-3] + b"[" + b",".join(events) + b"]}"
