"""``GET /api/v1/signals`` over 30 days of summaries from 50 agents, on PostgreSQL.

One summary a minute per agent for 30 days is 2.16 M summaries: too many to publish or write
through ingest in a benchmark's budget. What the route reads is the rollups only, so the rows
those summaries would have left there are generated inside PostgreSQL in bulk
(``generate_series``, as bench/postgres_queries.py loads events): per agent one pipeline with
four signals (score, rms_g and two channel means), one row per signal and hour holding the
sums of its sixty one-minute summaries, 144 000 rows in all, and their days; then VACUUM
ANALYZE. Then p50 and p99 of the route over HTTP against the real app under uvicorn, with
httpx: one agent's signals over 30 days by hour and by day, the fleet's one signal over 30
days by day and over 3 days by hour (over 30 days by hour it is 36 000 points, which the
route refuses with a 422 saying how to narrow it: checked once).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import postgres_cluster
from bench.postgres_queries import latencies_ms, percentiles, read_headers
from bench.result import Goal, Result
from cli.server import serve_in_thread
from cloud_api.config import Settings
from cloud_api.db import create_db_engine, migrate
from cloud_api.main import create_serving_app
from tests.services import PostgresCluster

AGENTS = 50
DAYS = 30
SIGNALS = ("score", "rms_g", "x_mean", "y_mean")
SUMMARIES_PER_HOUR = 60
VALUES_PER_SUMMARY = 375
REQUESTS = 100
WARMUP = 10

GENERATE = """
INSERT INTO signal_rollups (agent_id, pipeline, signal, hour, count, sum, min, max)
SELECT 'agent-' || lpad(a::text, 2, '0'), 'spindle-vibration', s, h,
       :count, :count * m, m - random(), m + random()
FROM generate_series(0, :agents - 1) AS a,
     unnest(CAST(:signals AS text[])) AS s,
     generate_series(:first, :last, interval '1 hour') AS h,
     LATERAL (SELECT 1 + random() + 0 * (a + length(s) + extract(epoch FROM h)) AS m) AS v
ORDER BY 1, 2, 3, 4
"""
"""Every agent's four signals for every hour of the 30 days, in key order: what the
summaries of one a minute would add up to (count = 60 summaries x 375 values)."""
GENERATE_DAYS = """
INSERT INTO signal_rollups_daily (agent_id, pipeline, signal, day, count, sum, min, max)
SELECT agent_id, pipeline, signal, timezone('UTC', date_trunc('day', timezone('UTC', hour))),
       sum(count), sum(sum), min(min), max(max)
FROM signal_rollups GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
"""The days of those hours, as ingest adds them up (``rollups.signal_day_rows``)."""


def load_rollups(engine: Engine, now: datetime) -> dict[str, float]:
    """Generate the rollup rows and ANALYZE them; seconds per step, and the row count."""
    last = now.replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(days=DAYS) + timedelta(hours=1)
    params: dict[str, Any] = {
        "agents": AGENTS,
        "signals": list(SIGNALS),
        "first": first,
        "last": last,
        "count": SUMMARIES_PER_HOUR * VALUES_PER_SUMMARY,
    }
    timings: dict[str, float] = {}
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.42)"))
        start = time.perf_counter()
        conn.execute(text(GENERATE), params)
        conn.execute(text(GENERATE_DAYS))
        timings["generate_s"] = time.perf_counter() - start
        timings["rows"] = conn.execute(text("SELECT count(*) FROM signal_rollups")).scalar_one()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        start = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE signal_rollups"))
        conn.execute(text("VACUUM ANALYZE signal_rollups_daily"))
        timings["vacuum_analyze_s"] = time.perf_counter() - start
    return timings


def range_queries(now: datetime, count: int, days: int = DAYS, **more: Any) -> list[dict[str, Any]]:
    """``count`` ranges of ``days`` ending now, a few seconds apart (a dashboard's "last
    month")."""
    return [
        {
            "since": (now - timedelta(days=days, seconds=i * 7)).isoformat(),
            "until": (now - timedelta(seconds=i * 7)).isoformat(),
            **more,
        }
        for i in range(count)
    ]


SHAPES: dict[str, tuple[int, dict[str, str]]] = {
    "one agent's 4 signals, 30 days by hour": (DAYS, {"agent_id": "agent-07", "bucket": "hour"}),
    "one agent's 4 signals, 30 days by day": (DAYS, {"agent_id": "agent-07", "bucket": "day"}),
    "the fleet's one signal (50 agents), 30 days by day": (
        DAYS,
        {"signal": "rms_g", "bucket": "day"},
    ),
    "the fleet's one signal (50 agents), 3 days by hour": (
        3,
        {"signal": "rms_g", "bucket": "hour"},
    ),
}
"""What a dashboard asks. The fleet's one signal by hour over 30 days (36 000 points, past
``MAX_POINTS``) is refused with a 422 that says how to narrow it; ``bench_on`` checks it is."""


def bench_on(cluster: PostgresCluster, workdir: Path) -> list[Result]:
    db_url = cluster.create_database()
    engine = create_db_engine(db_url)
    migrate(engine)
    now = datetime.now(UTC)
    timings = load_rollups(engine, now)
    print("loaded signal rollups: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    settings = Settings(database_url=db_url, ingest_enabled=False, data_dir=workdir)
    measured: list[tuple[str, list[float], int]] = []
    with (
        serve_in_thread(create_serving_app(settings)) as base,
        httpx.Client(base_url=base, headers=read_headers(engine)) as client,
    ):
        refused = client.get(
            "/api/v1/signals", params=range_queries(now, 1, signal="rms_g", bucket="hour")[0]
        )
        if refused.status_code != 422:
            raise RuntimeError(f"the fleet's month by hour answered {refused.status_code}")
        for name, (days, shape) in SHAPES.items():
            # Warm up each shape: its pages and the statement psycopg prepares after five runs.
            latencies_ms(client, "/api/v1/signals", range_queries(now, WARMUP, days, **shape))
            first = range_queries(now, 1, days, **shape)[0]
            body = client.get("/api/v1/signals", params=first).json()
            points = sum(len(series["points"]) for series in body["series"])
            queries = range_queries(now, REQUESTS, days, **shape)
            measured.append((name, latencies_ms(client, "/api/v1/signals", queries), points))
    engine.dispose()
    results = []
    for name, samples, points in measured:
        p50, p99 = percentiles(samples)
        results.append(
            Result(
                f"GET /api/v1/signals {name}: p99",
                p99,
                "ms",
                goal=Goal.value("<=", 50),
                details={
                    "p50_ms": round(p50, 2),
                    "requests": len(samples),
                    "points": points,
                    "via": "uvicorn + httpx",
                    "loaded": "rollup rows generated in PostgreSQL",
                    **{key: round(value, 1) for key, value in timings.items()},
                },
            )
        )
    return results


def bench_signals() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-signals-"))
    try:
        with postgres_cluster() as cluster:
            return bench_on(cluster, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
