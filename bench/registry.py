"""Every benchmark `make bench` runs, in order, with the time budget its process gets.

Targets are ``module:function`` strings imported only in the benchmark's own process, so
the harness stays light and one benchmark's imports cannot break another's run.

Budgets are two to three times what each took on this 2-core machine shared with other
work (load 5-6): enough for a slow run, short enough to end a hung one. They add up to
more than ``TOTAL_BUDGET_S`` (every benchmark at its worst at once is unlikely); the
harness cuts the last ones to what the run has left instead, so it ends in time.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.sizes import PG_EVENTS_DEFAULT, pg_events


@dataclass(frozen=True)
class Benchmark:
    """A benchmark the harness can run: ``name`` is what ``--only`` takes."""

    name: str
    title: str
    target: str
    budget_s: float


def postgres_queries_budget_s(events: int) -> float:
    """Loading grows with the size (~20 s a million here: 1 M took 56 s in all, 10 M 261 s,
    196 of them loading); the queries and retention take about a minute at any size."""
    return 120.0 + 35.0 * events / 1e6


def total_budget_s(events: int) -> float:
    """14 minutes, so `make bench` with its set-up steps ends within 15; a PostgreSQL load
    larger than the default adds the time it needs (the full size is a longer run)."""
    extra = postgres_queries_budget_s(events) - postgres_queries_budget_s(PG_EVENTS_DEFAULT)
    return 14 * 60.0 + max(extra, 0.0)


TOTAL_BUDGET_S = total_budget_s(pg_events())

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("edge", "edge pipeline", "bench.edge:bench_edge", 60),
    Benchmark("collect", "edge collection cost", "bench.collect:bench_collect", 60),
    Benchmark(
        "escalation-edge",
        "edge escalation cost",
        "bench.escalation_edge:bench_escalation_edge",
        60,
    ),
    Benchmark("sources", "sensor sources + windows", "bench.sources:bench_sources", 90),
    Benchmark("scorer", "edge pipeline, score model", "bench.scorer:bench_scorer", 30),
    Benchmark("camera", "camera pipeline", "bench.camera:bench_camera_throughput", 150),
    Benchmark("actions", "local actions", "bench.camera:bench_action_latency", 60),
    Benchmark("bandwidth", "camera bandwidth", "bench.camera:bench_bandwidth", 180),
    Benchmark("ingest", "ingest", "bench.ingest:bench_ingest_sqlite", 180),
    Benchmark("acks", "end-to-end acks", "bench.acks:bench_acks", 150),
    Benchmark("rollout", "rollout", "bench.rollout:bench_rollout", 90),
    Benchmark("escalation", "cloud model runner", "bench.escalation:bench_escalation", 90),
    Benchmark(
        "escalation-rtt",
        "escalation round trip",
        "bench.escalation_rtt:bench_escalation_round_trip",
        90,
    ),
    Benchmark("swap", "model swap", "bench.swap:bench_swap", 60),
    Benchmark(
        "postgres-ingest", "PostgreSQL ingest", "bench.postgres_ingest:bench_postgres_ingest", 150
    ),
    Benchmark(
        "postgres-queries",
        "PostgreSQL at scale",
        "bench.postgres_queries:bench_postgres_queries",
        postgres_queries_budget_s(pg_events()),
    ),
    Benchmark("signals", "signal trends", "bench.signals:bench_signals", 120),
    Benchmark("drift", "closed loop on a drifting machine", "bench.drift:bench_drift", 360),
)


def select(names: list[str] | None) -> list[Benchmark]:
    """The benchmarks ``names`` pick, in registry order (all of them for None).

    KeyError names the unknown ones and the known ones.
    """
    if not names:
        return list(BENCHMARKS)
    known = {b.name for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if b.name in names]
