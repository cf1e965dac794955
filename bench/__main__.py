"""`make bench`: every benchmark, printed as a table and written to bench-results.json.

Each line is a rate measured against a baseline measured in the same run on the same
machine (bare ONNX Runtime, bare broker subscriber), so the ratio is what to compare.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.acks import bench_acks
from bench.camera import bench_action_latency, bench_bandwidth, bench_camera_throughput
from bench.edge import bench_edge
from bench.ingest import bench_ingest_sqlite
from bench.postgres_ingest import bench_postgres_ingest
from bench.postgres_queries import bench_postgres_queries
from bench.result import Result
from bench.rollout import bench_rollout
from bench.swap import bench_swap


def main() -> None:
    console = Console()
    results: list[Result] = []
    benchmarks = (
        ("edge pipeline", bench_edge),
        ("camera pipeline", bench_camera_throughput),
        ("local actions", bench_action_latency),
        ("camera bandwidth", bench_bandwidth),
        ("ingest", bench_ingest_sqlite),
        ("end-to-end acks", bench_acks),
        ("rollout", bench_rollout),
        ("model swap", bench_swap),
        ("PostgreSQL ingest", bench_postgres_ingest),
        ("PostgreSQL at scale", bench_postgres_queries),
    )
    for name, run in benchmarks:
        console.print(f"running {name} ...")
        results.extend(run())
    table = Table(title="aiot benchmarks (baselines measured in the same run)")
    for column in ("benchmark", "rate", "baseline", "ratio", "goal", "met"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.name,
            f"{r.value:,.0f} {r.unit}" if r.value >= 100 else f"{r.value:.3g} {r.unit}",
            f"{r.baseline:,.0f} ({r.baseline_name})" if r.baseline else "-",
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            r.goal.describe(r.unit) if r.goal else "-",
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
    console.print(table)
    out = Path("bench-results.json")
    out.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": {"python": platform.python_version(), "cpu": platform.machine()},
                "results": [r.to_json() for r in results],
            },
            indent=2,
        )
    )
    console.print(f"written to {out}")


if __name__ == "__main__":
    main()
