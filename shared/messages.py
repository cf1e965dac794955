"""Wire messages between agents and the cloud (JSON over MQTT), validated by pydantic v2.

Every message carries ``schema`` (the contract version). Edge-side messages forbid unknown
keys, so a typo on a gateway is an error and never a silently dropped field.

The contract is strict, so that what it accepts SQLite and PostgreSQL both store (through
ingest) and the API can compute with. Each rule is one alias below, used by every field it
concerns:

- ``Int64``, ``Count``: a JSON integer, never ``1.0``, ``"1"`` or ``true``; within a signed
  64-bit SQL column (``-2**63 .. 2**63-1``); counters are ``>= 0``.
- ``FiniteFloat``: a JSON number, never a string or a boolean. JSON has one number type, so
  ``1`` is a valid float (it becomes ``1.0``). Finite only: ``NaN``, ``Infinity`` and
  literals that overflow to infinity (``1e400``) are refused; ``1e308`` is stored as is.
- Numbers with a meaning have a range: ``Score`` ``|score| <= 1e9`` (ingest adds scores up in
  float8 rollups), ``Seconds`` ``0 .. 100 years`` (uptime, ages, round trips; a gateway that
  booted at 1970 and then set its clock is still believed), ``HeartbeatSeconds`` ``0`` (not
  said: the Last Will) or up to one day (the API computes deadlines from it).
- ``SafeText`` (every free-text string, dict keys too): no NUL and no lone surrogate, which
  PostgreSQL text (UTF-8) cannot hold; lengths bounded by each alias.
- ``UtcDatetime``: ISO 8601 text with a UTC offset (not a unix time, not a bare date), between
  1970-01-01 and 9999-12-31T23:59:59.999999 once converted to UTC (``9999-12-31T23:00-05:00``
  is past year 9999 in UTC and refused). The offset is kept as sent.
- ``AttributeValue``: a boolean, an ``Int64``, a finite float or a ``SafeText`` of at most
  256 characters, as JSON typed it (``1`` stays an int, ``1.0`` a float, ``"1"`` a string);
  no arrays, objects or null.
- Sizes: every list and dict has a maximum length (the ``MAX_*`` constants).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    model_validator,
)

from shared.signing import SignedManifest
from shared.topics import AGENT_ID_PATTERN

SCHEMA_VERSION: Literal[1] = 1
MAX_EVENTS_PER_BATCH = 1000
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 256
MAX_SUMMARY_LABELS = 256
MAX_SUMMARY_SIGNALS = 32
MAX_PIPELINES = 64

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_SCORE = 1e9
MAX_SECONDS = 100 * 365.25 * 86400
MAX_HEARTBEAT_S = 86400.0
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _safe_text(value: str) -> str:
    if _UNSAFE_TEXT.search(value) is not None:
        raise ValueError("text must not contain NUL (\\u0000) or an unpaired surrogate")
    return value


def _schema_version(value: object) -> object:
    if type(value) is not int:
        raise ValueError(f"schema must be the integer {SCHEMA_VERSION}")
    return value


def _datetime_text(value: object) -> object:
    """Only ISO 8601 date-times are times: pydantic would also read numbers as unix times."""
    if (type(value) is str and value[4:5] == "-") or isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 date and time with an offset, e.g. 2026-11-22T10:15:03Z")


def _utc_range(value: datetime) -> datetime:
    # Offsets are under a day, so only the first and last year need the (slower) comparison,
    # which works on aware datetimes without converting them (astimezone could overflow).
    if 1970 < value.year < 9999 or EARLIEST <= value <= LATEST:
        return value
    raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} in UTC")


SafeText = AfterValidator(_safe_text)
"""Marks a string that PostgreSQL's UTF-8 text can hold: no NUL, no unpaired surrogate."""

Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[Int64, Field(ge=0)]
RowId = Annotated[Int64, Field(ge=1)]
"""The id of a cloud row (a deployment): a positive ``Int64``."""
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Score = Annotated[FiniteFloat, Field(ge=-MAX_SCORE, le=MAX_SCORE)]
Seconds = Annotated[FiniteFloat, Field(ge=0, le=MAX_SECONDS)]
HeartbeatSeconds = Annotated[FiniteFloat, Field(ge=0, le=MAX_HEARTBEAT_S)]
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_datetime_text), AfterValidator(_utc_range)]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_schema_version)]
AgentId = Annotated[str, Strict(), StringConstraints(pattern=AGENT_ID_PATTERN)]
Name = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Sha256 = Annotated[str, Strict(), StringConstraints(pattern=r"^[0-9a-f]{64}$")]
EventId = Annotated[
    str,
    Strict(),
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
BatchId = EventId
"""A batch is named like an event: a UUIDv7 made by the agent when it sends the batch."""
Label = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128), SafeText]
Reason = Annotated[str, Strict(), StringConstraints(max_length=512), SafeText]
SignalName = Name
EventState = Literal["start", "update", "end", "instant"]


def _attribute_value(value: object) -> AttributeValue:
    """One attribute, kept as JSON typed it (``1`` an int, ``1.0`` a float, ``"1"`` a string).

    Python callers may pass numpy scalars: they are numbers, so they become int or float.
    """
    if isinstance(value, bool):  # before int: a bool is an int in Python, never in JSON
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise ValueError("a float must be finite (no NaN or Infinity)")
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        raise ValueError("an integer must fit in 64 bits (-2**63 .. 2**63-1)")
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            raise ValueError(f"a text has at most {MAX_ATTRIBUTE_TEXT} characters")
        return _safe_text(value)
    if isinstance(value, numbers.Integral):
        return _attribute_value(int(value))
    if isinstance(value, numbers.Real):
        return _attribute_value(float(value))
    raise ValueError(f"must be a boolean, a number or a string, not {_json_kind(value)}")


def _attributes(value: object) -> dict[str, AttributeValue]:
    """Flat name -> value pairs; one validator for the dict, as ingest reads many of them."""
    if not isinstance(value, dict):
        raise ValueError(f"attributes must be an object, not {_json_kind(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, not {len(value)}")
    checked: dict[str, AttributeValue] = {}
    for name, item in value.items():
        if type(name) is not str or len(name) > MAX_ATTRIBUTE_NAME:
            raise ValueError(
                f"attribute names are strings of at most {MAX_ATTRIBUTE_NAME} characters"
            )
        try:
            checked[_safe_text(name)] = _attribute_value(item)
        except ValueError as exc:
            raise ValueError(f"attribute {name!r}: {exc}") from None
    return checked


def _json_kind(value: object) -> str:
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )


AttributeValue = bool | int | float | str
"""What an attribute holds: a boolean, an ``Int64``, a finite float or a short ``SafeText``."""
Attributes = Annotated[
    dict[str, AttributeValue],
    PlainValidator(_attributes, json_schema_input_type=dict[str, AttributeValue]),
]
"""An event's flat attributes (``{"rms_g": 1.84}``): no arrays, objects or null inside."""


def new_event_id() -> str:
    """A globally unique, time-ordered id (UUIDv7 layout: 48-bit ms clock, 74 random bits).

    Python 3.11 has no ``uuid.uuid7``; time order keeps the cloud's primary-key index
    append-mostly.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


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


UpdateState = Literal[
    "downloading", "verifying", "loading", "self_test", "watching", "running", "failed",
    "rolled_back",
]  # fmt: skip
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


class DesiredState(_EdgeMessage):
    """What the cloud publishes, retained, on an agent's ``desired`` topic.

    It is the whole desired state: a pipeline not listed runs the model of the agent's own
    configuration (that is how a rollback to the configured model is said).
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent_id: AgentId
    issued_at: UtcDatetime
    pipelines: list[DesiredModel] = Field(default_factory=list, max_length=MAX_PIPELINES)


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
