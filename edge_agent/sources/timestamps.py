"""Times as sensors write them, read as epoch seconds: one set of rules for every source.

A number is epoch seconds, or milliseconds when it is too large to be seconds (a sensor
publishing ``Date.now()``); a string is such a number or an ISO 8601 time, and a time that
names no zone is UTC (gateways log in UTC; local time would shift with the gateway's zone).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

MS_ABOVE = 1e11
"""Larger epoch numbers are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973."""


def from_number(value: float) -> float:
    """Epoch seconds from epoch seconds or milliseconds; ValueError if not finite."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a time")
    return value / 1000.0 if abs(value) >= MS_ABOVE else float(value)


def from_text(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 time; ValueError naming the text."""
    try:
        return from_number(float(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not epoch seconds or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
