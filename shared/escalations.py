"""An escalation: an input the edge was unsure about, sent to the pipeline's cloud model.

An agent publishes an :class:`Escalation` on its ``escalations`` topic (through the outbox,
after alerts and before summaries) when an edge result lies inside the pipeline's
``escalate.band``. It carries the input itself (``data``: the same bytes a sample blob would
hold, a ``.npy`` window or a JPEG taken under the pipeline's privacy policy) and the edge's
answer. The cloud model runner answers on ``escalations/result`` with an
:class:`EscalationResult`: the cloud model's label and score, or a refusal with its reason
(no cloud model for the pipeline, the agent over its quota, an input that does not decode).

The result is also the escalation's end-to-end acknowledgement: the agent keeps the
escalation in its outbox until a result with its ``id`` arrives, and sends it again after an
outage. The cloud answers a repeated ``id`` with the result it already gave, so one
escalation is run once and answered once, however often it travels.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from shared.fields import AgentId, EventId, Label, Name, Reason, Score, UtcDatetime
from shared.messages import SCHEMA_VERSION, ModelRef, SchemaVersion, _EdgeMessage
from shared.samples import (
    MAX_DETECTIONS,
    ImageInfo,
    PrivacyPolicy,
    SampleDetection,
    SampleKind,
    WindowInfo,
)

MAX_ESCALATION_BYTES = 512 * 1024
"""The decoded input of one escalation (a window or a JPEG crop); MQTT is not for big blobs."""
EscalationOutcome = Literal["answered", "refused"]


def _base64(value: object) -> object:
    """The input travels as standard base64 text; it is checked here, decoded by the reader."""
    if not isinstance(value, str):
        raise ValueError("data must be base64 text")
    if len(value) > (MAX_ESCALATION_BYTES * 4) // 3 + 4:
        raise ValueError(f"data holds at most {MAX_ESCALATION_BYTES} bytes")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"data is not base64: {exc}") from None
    return value


Base64Data = Annotated[str, BeforeValidator(_base64)]


class Escalation(_EdgeMessage):
    """One edge result inside the uncertainty band, with its input, sent to the cloud model."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    id: EventId
    """Made by the agent (UUIDv7); a resend keeps it, so the cloud answers it once."""
    agent_id: AgentId
    pipeline: Name
    ts: UtcDatetime
    """When the input was read (the source's time)."""
    model: ModelRef
    """The edge model that was unsure."""
    label: Label
    score: Score
    event_id: EventId | None = None
    """The edge event this input is behind, if any: the reconciled event links to it."""
    sample_id: EventId | None = None
    """The sample kept for the same input (reason ``escalated``), if collection kept one."""
    kind: SampleKind
    window: WindowInfo | None = None
    image: ImageInfo | None = None
    privacy: PrivacyPolicy
    data: Base64Data

    @model_validator(mode="after")
    def _layout_fits_kind(self) -> Escalation:
        if (self.kind == "window") != (self.window is not None):
            raise ValueError("a window escalation needs `window`, and only it has one")
        if (self.kind == "image") != (self.image is not None):
            raise ValueError("an image escalation needs `image`, and only it has one")
        if self.kind == "image" and self.privacy.images == "never":
            raise ValueError("no pixels may leave under `images: never`")
        return self

    def input_bytes(self) -> bytes:
        return base64.b64decode(self.data)


class EscalationResult(_EdgeMessage):
    """The cloud's answer to one escalation (``escalations/result``); also its ack."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    escalation_id: EventId
    agent_id: AgentId
    pipeline: Name
    ts: UtcDatetime
    """When the cloud answered."""
    outcome: EscalationOutcome
    reason: Reason = ""
    """Why an escalation was refused; empty when answered."""
    model: ModelRef | None = None
    """The cloud model that answered; None when refused."""
    label: Label | None = None
    score: Score | None = None
    detections: list[SampleDetection] = Field(default_factory=list, max_length=MAX_DETECTIONS)
    """For an image: what the cloud detector saw, in the escalated image's pixels."""
    inference_ms: Annotated[float, Field(ge=0, le=3.6e6)] | None = None
    """The cloud model's run time for this input's batch share."""

    @model_validator(mode="after")
    def _answer_fits_outcome(self) -> EscalationResult:
        answered = self.model is not None and self.label is not None and self.score is not None
        if self.outcome == "answered" and not answered:
            raise ValueError("an answered escalation names its cloud model, label and score")
        if self.outcome == "refused" and not self.reason:
            raise ValueError("a refused escalation says why in `reason`")
        return self
