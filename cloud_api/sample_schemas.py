"""REST shapes of samples, their labels and event feedback (``/api/v1/samples``,
``/api/v1/events/{id}/feedback``).

Kept apart from ``schemas.py`` (the rest of the REST classes), which would pass 500 lines
with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_api.schemas import LabelText

LabelSource = Literal["edge", "cloud", "person"]
Verdict = Literal["confirmed", "false_alarm", "relabel"]
FALSE_ALARM_LABEL = "normal"
"""What a false alarm's input is labelled when the person names no label."""


class SampleLabelOut(BaseModel):
    """One label of a sample and where it came from."""

    model_config = ConfigDict(from_attributes=True)

    label: str
    source: LabelSource
    author: str = Field(description="the agent (edge), the cloud, or the person's API key name")
    verdict: Verdict | None = Field(description="a person's verdict on the sample's event")
    model: str | None = Field(description="'name version' of the model behind it (not a person)")
    created_at: datetime


class SampleOut(BaseModel):
    """One stored sample: the edge's metadata, its labels and where to fetch its blob."""

    id: str
    agent_id: str
    pipeline: str
    ts: datetime
    reason: str
    event_id: str | None
    received_at: datetime
    meta: dict[str, Any] = Field(description="the metadata the agent uploaded (SampleMeta)")
    labels: list[SampleLabelOut]
    blob_url: str


class SamplePage(BaseModel):
    """A page of samples, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[SampleOut]
    next_cursor: str | None = Field(description="null on the last page")


class SampleDisagreement(BaseModel):
    """A sample whose edge and cloud labels differ: the review list's row."""

    sample: SampleOut
    edge_label: str
    cloud_label: str


class ReviewPage(BaseModel):
    """A page of the review list, newest first; pass ``next_cursor`` back as ``cursor``."""

    items: list[SampleDisagreement]
    next_cursor: str | None = Field(description="null on the last page")


class FeedbackIn(BaseModel):
    """A person's verdict on an event; ``relabel`` needs ``label``."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    label: LabelText | None = Field(
        default=None,
        description="relabel: the right label; false_alarm: what the input is "
        f"(default {FALSE_ALARM_LABEL!r}); confirmed: not given (the event's label)",
    )

    @model_validator(mode="after")
    def _label_fits_verdict(self) -> FeedbackIn:
        if self.verdict == "relabel" and self.label is None:
            raise ValueError("a relabel needs `label`")
        if self.verdict == "confirmed" and self.label is not None:
            raise ValueError("a confirmation takes the event's label: leave `label` out")
        return self


class FeedbackOut(BaseModel):
    """The recorded verdict and how many of the event's stored samples it labelled."""

    model_config = ConfigDict(from_attributes=True)

    event_id: str
    verdict: Verdict
    label: str
    author: str
    created_at: datetime
    samples_labelled: int
