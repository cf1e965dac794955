"""REST shapes of ``GET /api/v1/signals``: a machine's signals bucketed over months.

Kept apart from ``schemas.py`` (the rest of the REST classes), which would pass 500 lines
with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from cloud_api.schemas import SeriesBucket


@dataclass(slots=True)
class SignalPoint:
    """One bucket with summaries: the signal's envelope and mean over the bucket's windows.

    A plain dataclass, not a model: an answer holds up to ``MAX_POINTS`` of them, built from
    database rows whose types are right already, and a dataclass is built 20x faster than a
    model (pydantic still documents and serializes it).
    """

    ts: Annotated[datetime, Field(description="the bucket's start (UTC)")]
    min: float
    mean: Annotated[
        float | None,
        Field(
            description="count-weighted mean of the summaries' means; null only when their "
            "sum lies beyond the float range"
        ),
    ]
    max: float
    count: Annotated[int, Field(description="values the summaries' statistics were computed over")]


class SignalSeries(BaseModel):
    """The non-empty buckets of one signal of one agent's pipeline, oldest first."""

    agent_id: str
    pipeline: str
    signal: str
    points: list[SignalPoint]


class SignalReport(BaseModel):
    """``GET /api/v1/signals``: summaries' signals whose window starts in an hour that
    overlaps ``[since, until)``, bucketed in time, one series per agent, pipeline and signal."""

    bucket: SeriesBucket
    since: datetime
    until: datetime
    series: list[SignalSeries]
