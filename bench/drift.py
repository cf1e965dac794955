"""The closed loop on a drifting machine, measured (``cli/drift_operator.py``'s loop).

A local broker, the API on SQLite and one agent whose simulated spindle drifts to a new shaft
speed at four times real time; the loop labels the drifted alarms through REST, trains,
shadows, canaries and rolls out. Three lines: false alarms per hour on the drifted machine
after the loop against before it (goal: down at least 5x), recall on the injected faults after
against before (goal: not lower), and the minutes from the drift to the new model serving
(which include the ~50 s the serving model is watched on the drifted machine first).
"""

from __future__ import annotations

import logging

from bench.result import Goal, Result
from cli.demo_drift import drift_platform
from cli.drift_loop import DriftScenario, LoopResult
from cli.drift_operator import run_loop

SCENARIO = DriftScenario(speed=4.0, drift_at_s=30.0, measure_s=200.0, timeout_s=300.0)


def bench_drift() -> list[Result]:
    logging.getLogger("edge_agent").setLevel(logging.WARNING)
    logging.getLogger("cloud_api").setLevel(logging.WARNING)
    with drift_platform(SCENARIO, lambda _: None) as operator:
        result = run_loop(operator)
    return results(result)


def results(loop: LoopResult) -> list[Result]:
    before, after = loop.before, loop.after
    if before is None or after is None:
        raise RuntimeError("the drift loop ended without both measurements")
    steps = {name: round(seconds, 1) for name, seconds in loop.steps}
    return [
        Result(
            "false alarms per hour, drifted machine",
            after.false_alarms_per_hour,
            "/h",
            baseline=before.false_alarms_per_hour,
            baseline_name=f"serving {before.version} before the loop",
            goal=Goal.ratio("<=", 0.2),
            details={
                "before": before.false_alarms,
                "after": after.false_alarms,
                "normal_min_before": round(before.normal_s / 60, 2),
                "normal_min_after": round(after.normal_s / 60, 2),
            },
        ),
        Result(
            "recall on injected faults",
            after.recall,
            "",
            baseline=before.recall,
            baseline_name=f"serving {before.version} before the loop",
            goal=Goal.ratio(">=", 1.0),
            details={
                "caught_before": f"{before.caught}/{before.faults}",
                "caught_after": f"{after.caught}/{after.faults}",
            },
        ),
        Result(
            "minutes from drift to the new model serving",
            loop.drift_to_serving_s / 60.0,
            "min",
            details={"version": loop.version, **steps},
        ),
    ]
