"""The whole run: each benchmark in turn in its own process, the file rewritten after each,
the whole within TOTAL_BUDGET_S."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console

from bench.registry import TOTAL_BUDGET_S, Benchmark
from bench.report import Report
from bench.runner import STOP_GRACE_S, Run, run_benchmark

EXIT_ALL_RAN, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def run_all(
    benchmarks: list[Benchmark],
    report: Report,
    console: Console,
    *,
    total_budget_s: float = TOTAL_BUDGET_S,
    echo: TextIO | None = None,
) -> list[Run]:
    """Run each benchmark in turn, adding it to ``report`` (which writes the file) as it ends.

    Each gets its own budget, cut to what is left of ``total_budget_s`` (less a stop grace):
    once that is spent, the rest are recorded as timeouts without running. Stops early only
    when interrupted. Children's stderr goes to ``echo`` (sys.stderr by default).
    """
    deadline = time.monotonic() + total_budget_s
    report.write()
    for benchmark in benchmarks:
        left = deadline - time.monotonic() - STOP_GRACE_S
        if left < 1.0:
            report.add(_not_started(benchmark, total_budget_s))
            console.print(f"[bold]{benchmark.name}[/]: [bold red]not started[/], no time left")
            continue
        budget = min(benchmark.budget_s, left)
        console.print(f"[bold]{benchmark.name}[/]: {benchmark.title} (budget {budget:.0f} s)")
        run = run_benchmark(replace(benchmark, budget_s=budget), echo=echo)
        if run.status == "timeout" and budget < benchmark.budget_s:
            run.reason += f"\n(its {benchmark.budget_s:g} s were cut to what the run had left)"
        report.add(run)
        console.print(f"[bold]{benchmark.name}[/]: {_summary(run)}")
        if run.interrupted:
            break
    else:
        report.finish()
    return report.runs


def exit_code(runs: list[Run]) -> int:
    if any(r.interrupted for r in runs):
        return EXIT_INTERRUPTED
    return EXIT_ALL_RAN if all(r.status == "ok" for r in runs) else EXIT_FAILED


def _not_started(benchmark: Benchmark, total_budget_s: float) -> Run:
    return Run(
        name=benchmark.name, title=benchmark.title, status="timeout", duration_s=0.0,
        budget_s=0.0, started_at=datetime.now(UTC).isoformat(), load_avg_1m=os.getloadavg()[0],
        reason=f"not started: the run's {total_budget_s:g} s were spent",
    )  # fmt: skip


def _summary(run: Run) -> str:
    if run.status != "ok":
        last = run.reason.splitlines()[-1] if run.reason else ""
        return f"[bold red]{run.status}[/] after {run.duration_s:.1f} s: {last}"
    goals = [r.met for r in run.results if r.met is not None]
    missed = goals.count(False)
    verdict = f", {missed} of {len(goals)} goals missed" if missed else ""
    return f"ok in {run.duration_s:.1f} s, {len(run.results)} results{verdict}"
