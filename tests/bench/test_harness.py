"""The bench harness: every benchmark ends up in bench-results.json with its status and goals,
whether it passed, raised, crashed or hung (fakes from tests/bench/fakes.py, no timings)."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.child import load_target
from bench.harness import EXIT_ALL_RAN, EXIT_FAILED, exit_code, run_all
from bench.registry import BENCHMARKS, Benchmark, select, total_budget_s
from bench.report import Report
from bench.result import Goal, Result
from bench.runner import STOP_GRACE_S, Run, outcome
from bench.sizes import PG_EVENTS_DEFAULT


def fake(name: str, budget_s: float = 120.0) -> Benchmark:
    return Benchmark(name, f"fake {name}", f"tests.bench.fakes:{name}", budget_s)


def run(fakes: list[Benchmark], path: Path) -> tuple[list[Run], dict[str, Any]]:
    report = Report(path=path, machine={"cores": 2}, planned=[b.name for b in fakes])
    runs = run_all(fakes, report, Console(file=io.StringIO()), echo=io.StringIO())
    return runs, json.loads(path.read_text())


def test_a_benchmark_that_raises_hangs_or_crashes_leaves_the_others_in_the_file(
    tmp_path: Path,
) -> None:
    fakes = [fake("raises"), fake("hangs", budget_s=1.0), fake("crashes"), fake("passes")]
    runs, written = run(fakes, tmp_path / "bench-results.json")

    status = {b["name"]: b["status"] for b in written["benchmarks"]}
    assert status == {"raises": "failed", "hangs": "timeout", "crashes": "failed", "passes": "ok"}
    reasons = {b["name"]: b["reason"] for b in written["benchmarks"]}
    assert "RuntimeError: agents do not report a pipeline" in reasons["raises"]
    assert "1 s budget" in reasons["hangs"]
    assert "SIGKILL" in reasons["crashes"]
    assert written["complete"] is True
    assert written["pending"] == []
    assert exit_code(runs) == EXIT_FAILED

    kept = {b["name"]: b["files_kept"] for b in written["benchmarks"]}
    assert kept["passes"] is None
    for name in ("raises", "hangs", "crashes"):
        assert Path(kept[name]).is_dir()
        shutil.rmtree(kept[name])

    lines = {(r["benchmark"], r["name"]): r for r in written["results"]}
    assert lines["passes", "fast enough"]["met"] is True
    assert not Path(lines["passes", "fast enough"]["details"]["tmp"]).exists()
    assert lines["passes", "fast enough"]["ratio"] == pytest.approx(0.95)
    assert lines["passes", "fast enough"]["goal"] == {
        "on": "ratio", "comparator": ">=", "target": 0.9
    }  # fmt: skip
    assert lines["passes", "too slow"]["met"] is False
    assert lines["passes", "p99"]["met"] is True
    assert lines["passes", "no goal"]["met"] is None
    failed = lines["raises", "fake raises"]
    assert (failed["status"], failed["value"], failed["met"]) == ("failed", None, None)


def test_missed_goals_still_exit_zero(tmp_path: Path) -> None:
    runs, written = run([fake("passes")], tmp_path / "out.json")
    assert [r["met"] for r in written["results"]] == [True, False, True, None]
    assert exit_code(runs) == EXIT_ALL_RAN


def test_the_file_holds_each_finished_run_before_the_next_starts(tmp_path: Path) -> None:
    path = tmp_path / "bench-results.json"
    report = Report(path=path, machine={}, planned=["one", "two"])
    report.add(a_run("one", results=[Result("x", 1.0, "s", goal=Goal.value("<=", 2))]))

    written = json.loads(path.read_text())
    assert [b["name"] for b in written["benchmarks"]] == ["one"]
    assert written["pending"] == ["two"]
    assert written["complete"] is False
    assert written["results"][0]["met"] is True


@pytest.mark.parametrize(
    ("goal", "result", "met"),
    [
        (Goal.ratio(">=", 0.95), Result("r", 95, "x", baseline=100), True),
        (Goal.ratio(">=", 0.95), Result("r", 94, "x", baseline=100), False),
        (Goal.ratio(">", 1), Result("r", 100, "x", baseline=100), False),
        (Goal.ratio(">=", 0.5), Result("r", 1, "x"), None),  # no baseline: nothing to judge
        (Goal.value("<", 50), Result("p99", 50, "ms"), False),
        (Goal.value("<=", 0.1), Result("bytes", 0.007, "%"), True),
        (Goal.value("<=", 6), Result("s", math.nan, "s"), False),
        (None, Result("r", 1, "x", baseline=2), None),
    ],
)
def test_met(goal: Goal | None, result: Result, met: bool | None) -> None:
    result.goal = goal
    assert result.met is met
    assert Result.from_json(json.loads(json.dumps(result.to_json()))).met is met


@pytest.mark.parametrize(
    ("exit_code_", "timed_out", "output", "status", "reason"),
    [
        (0, False, '{"results": []}', "ok", ""),
        (1, False, None, "failed", "exited with code 1\nValueError: boom"),
        (-9, False, None, "failed", "killed by SIGKILL\nValueError: boom"),
        (-15, True, None, "timeout", "no result within its 5 s budget\nValueError: boom"),
        (0, False, None, "failed", "exited 0 without writing its results\nValueError: boom"),
    ],
)
def test_outcome(
    exit_code_: int, timed_out: bool, output: str | None, status: str, reason: str
) -> None:
    got = outcome(
        exit_code=exit_code_, timed_out=timed_out, budget_s=5, stderr_tail=["ValueError: boom"],
        output=output,
    )  # fmt: skip
    assert got[:2] == (status, reason)


def test_unreadable_results_are_a_failure() -> None:
    status, reason, _ = outcome(
        exit_code=0, timed_out=False, budget_s=5, stderr_tail=[], output='{"results": [1]}'
    )
    assert status == "failed"
    assert reason.startswith("unreadable results")


def test_every_registered_benchmark_resolves() -> None:
    assert len({b.name for b in BENCHMARKS}) == len(BENCHMARKS)
    for benchmark in BENCHMARKS:
        assert callable(load_target(benchmark.target)), benchmark.name


def test_the_default_run_fits_in_fifteen_minutes_and_the_full_size_gets_longer() -> None:
    assert total_budget_s(PG_EVENTS_DEFAULT) + STOP_GRACE_S <= 15 * 60
    assert total_budget_s(10_000_000) > total_budget_s(PG_EVENTS_DEFAULT)


def test_once_the_run_has_no_time_left_the_rest_are_timeouts_without_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.json"
    report = Report(path=path, machine={}, planned=["passes"])
    run_all([fake("passes")], report, Console(file=io.StringIO()), total_budget_s=0)
    (written,) = json.loads(path.read_text())["benchmarks"]
    assert (written["status"], written["duration_s"]) == ("timeout", 0)
    assert written["reason"].startswith("not started")


def test_select_keeps_registry_order_and_names_unknown_benchmarks() -> None:
    assert [b.name for b in select(["swap", "edge"])] == ["edge", "swap"]
    with pytest.raises(KeyError, match="unknown benchmark nope"):
        select(["nope"])


def a_run(name: str, results: list[Result]) -> Run:
    return Run(
        name=name, title=name, status="ok", duration_s=1.0, budget_s=10.0,
        started_at="2026-12-03T00:00:00+00:00", load_avg_1m=0.5, results=results,
    )  # fmt: skip
