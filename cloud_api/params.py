"""Query and path parameters with a range, declared once: every route takes these types.

What a parameter accepts, every database accepts: times are instants in the years
1970-9999 once their UTC offset is applied (``9999-12-31T23:59:59-05:00`` is in the year
10000), ids fit a signed 64-bit column, text has a length and no NUL (PostgreSQL refuses
it). Anything else is a 422 that names the parameter, before a query is built. Cursors
have their own module (``cloud_api/cursors.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

from cloud_api.schemas import NO_NUL
from shared.messages import AgentId, Name
from shared.topics import AGENT_ID_PATTERN

INT64_MAX = 2**63 - 1
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TIME_RANGE = "from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, after its UTC offset"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def iso_8601(value: Any) -> Any:
    """``value`` unless it is text that does not start as an ISO 8601 date and time.

    pydantic would read ``0.5`` as a Unix time; the contract says ``date-time``, and a number
    in a time parameter is more likely a mistake than a time.
    """
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("time must be ISO 8601 with its offset, like 2026-11-22T10:15:00Z")
    return value


def in_time_range(value: datetime) -> datetime:
    """``value`` in UTC if it lies in ``[MIN_TIME, MAX_TIME]``; ValueError otherwise.

    Applying the offset is the check: a time that cannot be expressed in UTC is out of range
    for every database (and for Python, which overflows on ``0001-01-01T00:00:00+01:00``).
    """
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time must be {TIME_RANGE}") from None
    if utc < MIN_TIME:
        raise ValueError(f"time must be {TIME_RANGE}")
    return utc


Instant = Annotated[AwareDatetime, BeforeValidator(iso_8601), AfterValidator(in_time_range)]
"""A timezone-aware time in the years 1970-9999 (UTC), returned in UTC."""

SinceQuery = Annotated[
    Instant | None, Query(description=f"inclusive; an ISO 8601 time with its offset, {TIME_RANGE}")
]
UntilQuery = Annotated[
    Instant | None, Query(description=f"exclusive; an ISO 8601 time with its offset, {TIME_RANGE}")
]
WindowSinceQuery = Annotated[
    Instant | None,
    Query(description=f"inclusive, on the summaries' window start; {TIME_RANGE}"),
]
WindowUntilQuery = Annotated[
    Instant | None,
    Query(description=f"exclusive, on the summaries' window start; {TIME_RANGE}"),
]

AgentIdQuery = Annotated[AgentId | None, Query(description="only this agent's data")]
NameQuery = Annotated[Name | None, Query(description="as the edge names it: 1-64 of A-Za-z0-9_.:-")]
"""A pipeline or an event kind: the wire's ``Name``, so anything an event can carry."""
LabelQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=128, pattern=NO_NUL, description="an event label"),
]

AgentIdPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="the agent's id")]
KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="12 hex digits")]
ModelNamePath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="a model name or version")
]
"""What the registry accepts as a model name or version (``registry.NAME_PATTERN``)."""
Id64Path = Annotated[int, Path(ge=1, le=INT64_MAX, description="a positive 64-bit id")]

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
