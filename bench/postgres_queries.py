"""PostgreSQL at scale: API latency on millions of stored events, and retention's delete rate.

``AIOT_BENCH_PG_EVENTS`` events (bench/sizes.py: 2 M by default, 10 M for the full size)
generated inside PostgreSQL (50 agents, 4 pipelines, 5 labels, 30 days), indexes built,
rollups backfilled and ANALYZEd; then p50/p99 of ``GET /api/v1/events`` (agent_id and label,
100 per page) and ``GET /api/v1/aggregates`` (hourly, one week) over HTTP against the real app
under uvicorn, with httpx; then retention deletes the oldest of the 30 days.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.common import postgres_cluster
from bench.result import Goal, Result
from bench.sizes import pg_events
from cli.server import serve_in_thread
from cloud_api.analytics import rollups
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.db import create_db_engine, migrate
from cloud_api.main import create_serving_app
from cloud_api.queries.events import events_page_query
from cloud_api.retention import Retention
from cloud_api.tables import EVENTS as EVENTS_TABLE
from tests.services import PostgresCluster

STORED_EVENTS = pg_events()
AGENTS = 50
PIPELINES = ("spindle-vibration", "door-camera", "pump-pressure", "line-temperature")
LABELS = ("normal_wear", "bearing_outer_race", "imbalance", "person", "overheat")
DAYS = 30
REQUESTS = 200
WARMUP = 20
RETENTION_BATCH = 5000


def read_headers(engine: Engine) -> dict[str, str]:
    """Headers every bench request sends: a read-scoped API key made in this database, as a
    dashboard would hold (each request pays for checking it)."""
    with Session(engine) as session:
        _, token = create_api_key(session, name="bench-postgres", scope="read")
    return {"Authorization": f"Bearer {token}"}


GENERATE = """
INSERT INTO events (id, agent_id, pipeline, kind, state, label, score, ts, seq, model_name,
                    model_version, model_sha256, attributes, received_at)
SELECT lpad(to_hex(i), 32, '0')::uuid::text,
       'agent-' || lpad((i % :agents)::text, 2, '0'),
       (ARRAY['spindle-vibration', 'door-camera', 'pump-pressure', 'line-temperature'])
           [1 + (i % :agents) % 4],
       CASE WHEN (i % :agents) % 4 = 1 THEN 'object' ELSE 'anomaly' END,
       'instant',
       (ARRAY['normal_wear', 'bearing_outer_race', 'imbalance', 'person', 'overheat'])
           [1 + (i / :agents) % 5],
       random(),
       ts,
       i,
       'vibration-anomaly',
       CASE WHEN ts < :now - interval '10 days' THEN '1.0.0' ELSE '1.1.0' END,
       repeat('ab', 32),
       jsonb_build_object('rms_g', round((random() * 3)::numeric, 3), 'peak_hz', 162.5),
       ts + interval '1 second'
FROM generate_series(1, :n) AS i,
     LATERAL (SELECT :now - (:n - i) * (:days * interval '1 day' / :n)
                  - random() * interval '1 second' AS ts) AS t
"""
"""Evenly spread over ``days`` up to ``now``; ids UUID-shaped as the wire contract wants them
and in time order, as the edge's UUIDv7 ids are."""


def load_events(engine: Engine, count: int, now: datetime) -> dict[str, float]:
    """Generate ``count`` events, build indexes, backfill rollups, ANALYZE; seconds per step."""
    timings: dict[str, float] = {}
    indexes = list(EVENTS_TABLE.indexes)
    with engine.begin() as conn:
        # Bulk load first, indexes after: building an index once is far cheaper than
        # maintaining six of them row by row.
        for index in indexes:
            conn.execute(text(f"DROP INDEX {index.name}"))
        conn.execute(text("ALTER TABLE events DROP CONSTRAINT events_pkey"))
        conn.execute(text("SELECT setseed(0.42)"))
        start = time.perf_counter()
        conn.execute(text(GENERATE), {"n": count, "agents": AGENTS, "days": DAYS, "now": now})
        timings["generate_s"] = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        start = time.perf_counter()
        conn.execute(text("ALTER TABLE events ADD PRIMARY KEY (id)"))
        for index in indexes:
            index.create(conn)
        timings["indexes_s"] = time.perf_counter() - start
        start = time.perf_counter()
        rollups.backfill(conn)
        timings["rollups_s"] = time.perf_counter() - start
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        start = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE events"))
        for level in rollups.LEVELS:
            conn.execute(text(f"VACUUM ANALYZE {level.table.name}"))
        timings["vacuum_analyze_s"] = time.perf_counter() - start
    return timings


def latencies_ms(client: httpx.Client, path: str, params: list[dict[str, Any]]) -> list[float]:
    out = []
    for query in params:
        start = time.perf_counter()
        response = client.get(path, params=query)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        out.append(elapsed * 1000)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def event_queries(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [
        {
            "agent_id": f"agent-{rng.randrange(AGENTS):02d}",
            "label": rng.choice(LABELS),
            "limit": 100,
        }
        for _ in range(count)
    ]


def aggregate_queries(now: datetime, count: int, **more: str) -> list[dict[str, Any]]:
    # A dashboard's "last week" ends now, not on the hour: partial hours come from raw events.
    return [
        {
            "bucket": "hour",
            "metric": "avg",
            "since": (now - timedelta(days=7, seconds=i * 7)).isoformat(),
            "until": (now - timedelta(seconds=i * 7)).isoformat(),
            **more,
        }
        for i in range(count)
    ]


GROUPED: dict[str, dict[str, str]] = {
    "GET /api/v1/aggregates hourly avg, one week": {},
    "GET /api/v1/aggregates hourly avg by label, one week": {"group_by": "label"},
    "GET /api/v1/aggregates hourly avg by pipeline, one week": {"group_by": "pipeline"},
    "GET /api/v1/aggregates hourly avg by model version, one week": {"group_by": "model_version"},
    "GET /api/v1/aggregates hourly avg by agent (50), one week": {"group_by": "agent_id"},
    "GET /api/v1/aggregates daily avg by label, one week": {"group_by": "label", "bucket": "day"},
}
"""The aggregates a dashboard asks for, fleet-wide and grouped by one dimension (each answered
from the rollup level of that dimension)."""


def explain_event_pages(engine: Engine, now: datetime) -> dict[str, str]:
    """The index each filter combination of ``GET /api/v1/events`` uses (EXPLAIN ANALYZE)."""
    week = {"since": now - timedelta(days=7), "until": now - timedelta(days=6)}
    combinations: dict[str, dict[str, Any]] = {
        "none": {},
        "agent_id": {"agent_id": "agent-07"},
        "pipeline": {"pipeline": "pump-pressure"},
        "label": {"label": "overheat"},
        "kind": {"kind": "object"},
        "agent_id+label": {"agent_id": "agent-07", "label": "overheat"},
        "pipeline+label+kind": {"pipeline": "door-camera", "label": "person", "kind": "object"},
        "since/until": week,
        "agent_id+since/until": {"agent_id": "agent-07", **week},
        "label+since/until": {"label": "overheat", **week},
    }
    plans = {}
    with engine.connect() as conn:
        for name, filters in combinations.items():
            query = events_page_query(limit=101, **filters)
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            lines = conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}")).scalars().all()
            scans = [line.strip() for line in lines if "Scan" in line]
            total = next(line for line in lines if line.startswith("Execution Time"))
            plans[name] = f"{'; '.join(scans)} ({total})"
    return plans


def retention_rate(engine: Engine, now: datetime) -> Result:
    """Rows/s retention deletes in its default batches: the oldest day of the 30 goes."""
    batches: list[int] = []
    retention = Retention(
        engine=engine,
        days=DAYS - 1,
        batch=RETENTION_BATCH,
        interval_s=60,
        observer=lambda _table, rows: batches.append(rows),
        clock=lambda: now,
    )
    start = time.perf_counter()
    deleted = retention.run_once() or {}
    elapsed = time.perf_counter() - start
    rows = sum(deleted.values())
    return Result(
        f"retention of one day of {STORED_EVENTS / 1e6:g} M events, {RETENTION_BATCH}-row batches",
        rows / elapsed,
        "rows/s",
        details={"seconds": round(elapsed, 1), "batches": len(batches), **deleted},
    )


def bench_queries(cluster: PostgresCluster, workdir: Path) -> list[Result]:
    db_url = cluster.create_database()
    engine = create_db_engine(db_url)
    migrate(engine)
    now = datetime.now(UTC)
    start = time.perf_counter()
    timings = load_events(engine, STORED_EVENTS, now)
    print(
        f"loaded {STORED_EVENTS:,} events in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
    )
    for name, plan in explain_event_pages(engine, now).items():
        print(f"  events page by {name}: {plan}")
    settings = Settings(database_url=db_url, ingest_enabled=False, data_dir=workdir)
    rng = random.Random(7)
    with (
        serve_in_thread(create_serving_app(settings)) as base,
        httpx.Client(base_url=base, headers=read_headers(engine)) as client,
    ):
        latencies_ms(client, "/api/v1/events", event_queries(rng, WARMUP))
        latencies_ms(client, "/api/v1/aggregates", aggregate_queries(now, WARMUP))
        events_ms = latencies_ms(client, "/api/v1/events", event_queries(rng, REQUESTS))
        measured = [("GET /api/v1/events agent_id+label, 100/page", events_ms)]
        for name, more in GROUPED.items():
            # Each shape warms up as the fleet total did: its rollup table's pages and the
            # statement psycopg prepares after five runs are a dashboard's steady state.
            latencies_ms(client, "/api/v1/aggregates", aggregate_queries(now, WARMUP, **more))
            queries = aggregate_queries(now, REQUESTS, **more)
            measured.append((name, latencies_ms(client, "/api/v1/aggregates", queries)))
    results = [retention_rate(engine, now)]
    engine.dispose()
    for name, samples in measured:
        p50, p99 = percentiles(samples)
        details: dict[str, float | int | str] = {
            "p50_ms": round(p50, 2),
            "requests": len(samples),
            "via": "uvicorn + httpx",
            **{name: round(seconds, 1) for name, seconds in timings.items()},
        }
        results.append(
            Result(
                f"{name}, {STORED_EVENTS / 1e6:g} M events: p99",
                p99,
                "ms",
                goal=Goal.value("<", 50),
                details=details,
            )
        )
    return results


def bench_postgres_queries() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-pg-queries-"))
    try:
        with postgres_cluster() as cluster:
            return bench_queries(cluster, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
