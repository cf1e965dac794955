"""bench-results.json, rewritten atomically after every benchmark, and the tables it prints.

The file's shape::

    {"started_at", "updated_at", "complete": bool, "machine": {...},
     "pending": [names not run yet],
     "benchmarks": [{"name", "title", "status": "ok|failed|timeout", "reason",
                     "duration_s", "budget_s", "started_at", "load_avg_1m",
                     "files_kept": the child's TMPDIR after a bad run | null, "results": n}],
     "results": [{"benchmark", "status", "name", "value", "unit", "baseline",
                  "baseline_name", "ratio", "goal": {"on", "comparator", "target"} | null,
                  "met": true | false | null, "details", "reason"}]}

A benchmark that failed or timed out has one line in ``results`` with its title as name, no
value and its reason, so a reader of ``results`` alone sees it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.runner import Run
from bench.write import write_json_atomic


@dataclass
class Report:
    """The runs so far; ``add`` writes the file again, so a kill loses no finished run."""

    path: Path
    machine: dict[str, Any]
    planned: list[str]
    runs: list[Run] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    complete: bool = False

    def add(self, run: Run) -> None:
        self.runs.append(run)
        self.write()

    def finish(self) -> None:
        self.complete = True
        self.write()

    def write(self) -> None:
        write_json_atomic(self.path, self.document())

    def document(self) -> dict[str, Any]:
        done = {r.name for r in self.runs}
        return {
            "started_at": self.started_at,
            "updated_at": datetime.now(UTC).isoformat(),
            "complete": self.complete,
            "machine": self.machine,
            "pending": [name for name in self.planned if name not in done],
            "benchmarks": [_run_json(r) for r in self.runs],
            "results": [line for r in self.runs for line in _result_lines(r)],
        }


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "name": run.name,
        "title": run.title,
        "status": run.status,
        "reason": run.reason,
        "duration_s": round(run.duration_s, 1),
        "budget_s": run.budget_s,
        "started_at": run.started_at,
        "load_avg_1m": round(run.load_avg_1m, 2),
        "files_kept": run.files_kept or None,
        "results": len(run.results),
    }


def _result_lines(run: Run) -> list[dict[str, Any]]:
    head = {"benchmark": run.name, "status": run.status}
    if run.status != "ok":
        nothing: dict[str, Any] = {
            "value": None, "unit": None, "baseline": None, "baseline_name": "", "ratio": None,
            "goal": None, "met": None, "details": {},
        }  # fmt: skip
        return [head | {"name": run.title} | nothing | {"reason": run.reason}]
    return [head | r.to_json() | {"reason": ""} for r in run.results]


def results_table(runs: list[Run]) -> Table:
    """Every result line, and one line for each benchmark that produced none."""
    table = Table(title="aiot benchmarks (baselines measured in the same run)")
    for column in ("benchmark", "result", "value", "baseline", "ratio", "goal", "met"):
        table.add_column(column)
    for run in runs:
        if run.status != "ok":
            last = run.reason.splitlines()[-1] if run.reason else ""
            status = f"[bold red]{run.status.upper()}[/]"
            table.add_row(run.name, f"{status}: {last}", "-", "-", "-", "-", "-")
            continue
        for r in run.results:
            table.add_row(
                run.name,
                r.name,
                _amount(r.value, r.unit),
                f"{_amount(r.baseline, r.unit)} ({r.baseline_name})" if r.baseline else "-",
                f"{r.ratio:.3f}" if r.ratio is not None else "-",
                r.goal.describe(r.unit) if r.goal else "-",
                _met(r.met),
            )
    return table


def runs_table(runs: list[Run]) -> Table:
    """Each benchmark's process: status, time taken against its budget, load when it began."""
    table = Table(title="benchmark processes")
    for column in ("benchmark", "status", "duration", "budget", "load (1 min)"):
        table.add_column(column)
    for run in runs:
        colour = "green" if run.status == "ok" else "bold red"
        table.add_row(
            run.name,
            f"[{colour}]{run.status}[/]",
            f"{run.duration_s:.1f} s",
            f"{run.budget_s:g} s",
            f"{run.load_avg_1m:.2f}",
        )
    return table


def _amount(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _met(met: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[bold red]NO[/]", None: "-"}[met]
