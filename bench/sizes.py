"""Sizes the benchmarks take from the environment, read and checked in one place.

The harness budgets by them too: a larger size must get a longer budget, not a timeout.
"""

from __future__ import annotations

import os

PG_EVENTS_ENV = "AIOT_BENCH_PG_EVENTS"
PG_EVENTS_DEFAULT = 2_000_000
"""Events bench/postgres_queries.py loads. 2 M keeps `make bench` within 15 minutes on a
shared 2-core machine; AIOT_BENCH_PG_EVENTS=10000000 is the full size (see README)."""


def pg_events() -> int:
    """``AIOT_BENCH_PG_EVENTS``, or the default; ValueError names the variable otherwise."""
    raw = os.environ.get(PG_EVENTS_ENV, "")
    if not raw:
        return PG_EVENTS_DEFAULT
    try:
        count = int(raw.replace("_", ""))
    except ValueError:
        count = 0
    if count < 100_000:
        raise ValueError(f"{PG_EVENTS_ENV}={raw!r}: expected a whole number of events >= 100000")
    return count
