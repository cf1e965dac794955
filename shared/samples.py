"""The metadata of a kept input (a sample): what an agent uploads beside its blob.

A sample is a raw input a pipeline's ``collect:`` policy kept: a sensor window (a ``.npy``
file: its shape, dtype, sample rate and channels are declared here and checked against the
bytes by the cloud) or a camera image (a JPEG of the whole frame or of a crop, with the
detections). It travels over HTTP, never MQTT; ``id`` is fixed at the edge, so an upload
that is sent again after an outage stores nothing twice. ``reason`` says why it was kept;
``escalated`` is for inputs the edge also sent to the cloud model. ``privacy`` is the policy
the device applied before it wrote the sample: what a reviewer may expect to see.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from shared.fields import (
    AgentId,
    EventId,
    FiniteFloat,
    Label,
    Name,
    Score,
    Sha256,
    UtcDatetime,
)
from shared.messages import SCHEMA_VERSION, ModelRef, SchemaVersion, _EdgeMessage

SampleReason = Literal["random", "band", "event", "escalated"]
"""Why the edge kept an input: a random share, a score near the threshold, an event's input,
or an input it escalated to the cloud model."""
SampleKind = Literal["window", "image"]
ImagePolicy = Literal["never", "crops", "frames"]
"""What a camera may let leave: no pixels, crops of detected objects, or whole frames."""
CONTENT_TYPES: dict[str, str] = {"window": "application/x-npy", "image": "image/jpeg"}
"""The blob's media type by kind: a numpy ``.npy`` window, or a JPEG."""
WindowDtype = Literal["float32"]
MAX_DETECTIONS = 256
MAX_POLICY_LABELS = 64
MAX_CHANNELS = 256
MAX_DIMENSION = 1 << 24
MAX_PIXELS_SIDE = 16384
MAX_PIXELS = 40_000_000
"""Pixels of one image (8K UHD is 33 M): what a decoder may be asked to allocate."""

Dimension = Annotated[int, Field(strict=True, ge=1, le=MAX_DIMENSION)]
Pixels = Annotated[int, Field(strict=True, ge=1, le=MAX_PIXELS_SIDE)]
Box = tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]
"""x1, y1, x2, y2 in the pixels of the frame the sample was taken from."""


class PrivacyPolicy(_EdgeMessage):
    """What the device let leave: ``images``; boxes of ``blur`` labels blurred; only
    detections of ``keep_labels`` kept (empty: every label)."""

    images: ImagePolicy = "never"
    blur: list[Label] = Field(default_factory=list, max_length=MAX_POLICY_LABELS)
    keep_labels: list[Label] = Field(default_factory=list, max_length=MAX_POLICY_LABELS)


class WindowInfo(_EdgeMessage):
    """A sensor window's layout: ``[W]`` or ``[C, W]`` float32 values at ``sample_rate_hz``."""

    shape: list[Dimension] = Field(min_length=1, max_length=2)
    dtype: WindowDtype = "float32"
    sample_rate_hz: Annotated[FiniteFloat, Field(gt=0, le=1e9)]
    channels: list[Label] = Field(default_factory=list, max_length=MAX_CHANNELS)


class SampleDetection(_EdgeMessage):
    """One object the edge model saw in the frame."""

    label: Label
    score: Score
    box: Box


class ImageInfo(_EdgeMessage):
    """A JPEG's size, and where it comes from: the whole frame, or a crop at ``box``."""

    width: Pixels
    height: Pixels
    region: Literal["frame", "crop"]
    box: Box | None = None
    """The crop's place in the frame (frame pixels); None for a whole frame."""
    detections: list[SampleDetection] = Field(default_factory=list, max_length=MAX_DETECTIONS)
    blurred: Annotated[int, Field(strict=True, ge=0, le=MAX_DETECTIONS)] = 0
    """Boxes the device blurred before it wrote the JPEG."""

    @model_validator(mode="after")
    def _bounded(self) -> ImageInfo:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"an image has at most {MAX_PIXELS} pixels")
        return self


class SampleMeta(_EdgeMessage):
    """What an agent says about one sample it uploads (``POST /api/v1/samples``)."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    id: EventId
    agent_id: AgentId
    pipeline: Name
    ts: UtcDatetime
    reason: SampleReason
    kind: SampleKind
    size: Annotated[int, Field(strict=True, ge=1, le=1 << 40)]
    sha256: Sha256
    model: ModelRef
    label: Label
    """The edge model's label for this input."""
    score: Score
    """The edge model's score for this input."""
    event_id: EventId | None = None
    """The event this input is behind, if any (feedback on that event labels the sample)."""
    window: WindowInfo | None = None
    image: ImageInfo | None = None
    privacy: PrivacyPolicy

    @model_validator(mode="after")
    def _layout_fits_kind(self) -> SampleMeta:
        if (self.kind == "window") != (self.window is not None):
            raise ValueError("a window sample needs `window`, and only a window sample has it")
        if (self.kind == "image") != (self.image is not None):
            raise ValueError("an image sample needs `image`, and only an image sample has it")
        if self.kind == "image" and self.privacy.images == "never":
            raise ValueError("an image sample cannot be taken under `images: never`")
        return self

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]
