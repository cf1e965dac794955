"""The closed loop on a drifting machine, scripted: what an operator does, through REST only.

A simulated spindle's normal drifts (a new shaft speed, ``drift:`` of its source), so the
serving vibration model raises false alarms; faults are still injected on schedule. The loop
measures the serving model on the drifted machine, labels its alarms as a person would (an
alarm outside every injected fault is a false alarm, one inside is relabelled with the
fault), asks for a training job over the agent's collected windows, shadows the candidate,
lets the shadow rule promote it into a canary and the canary roll out, then measures the new
version on the same machine. ``aiot demo --scenario drift``, the drift test and the drift
benchmark all run this module.

Time is the source's simulated time: an event's ``ts`` is the source's start ``t0`` plus
the simulated seconds of its window. ``t0`` is taken just before the agent starts, so it may
be up to the agent's start-up early: an alarm counts for a fault when it starts between
``MARGIN_BEFORE_S`` before the fault and ``MARGIN_AFTER_S`` after its end (the debounce needs a
few windows, and the start-up shifts every time a little later); alarms in those margins
outside the fault are neither false alarms nor detections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.sources.machine_physics import FAULTS, MachineSpec

MARGIN_BEFORE_S = 1.0
MARGIN_AFTER_S = 3.0
PERIOD_S = MachineSpec().window / MachineSpec().sample_rate_hz
"""Simulated seconds per window of the default machine (2048 values at 12.8 kHz)."""
MODEL = "vibration-anomaly"
PROMOTE_IF = {"alarm_rate_max_ratio": 1.0, "latency_p99_max_ratio": 20.0}
"""The shadow rule: the candidate may not alarm more often than the serving model, nor be
much slower. Agreement is not asked for: on a drifted machine the two should disagree."""
CANARY_QUALITY = {"min_windows": 400, "max_alarm_ratio": 20.0}
"""The canary's quality bound: fewer alarms than before is the point, so the bound on "stops
alarming" is wide, and judged over 400 windows (64 simulated seconds: three injected faults,
which a model that still works alarms on); a candidate that alarms on everything is still
out of bounds. Only at ``speed`` 1: the gate counts events over wall-clock time, and a faster
simulated machine stamps its events ahead of it."""


@dataclass(frozen=True)
class DriftScenario:
    """The machine's schedule and the loop's knobs, in simulated seconds."""

    speed: float = 1.0
    seed: int = 7
    drift_at_s: float = 30.0
    drifted_shaft_hz: float = 15.0
    fault_every_s: float = 20.0
    fault_lasts_s: float = 6.0
    first_fault_s: float = 8.0
    measure_s: float = 120.0
    horizon_s: float = 6 * 3600.0
    training: dict[str, Any] = field(
        default_factory=lambda: {"base_per_machine": 40, "shipped_test_per_machine": 10}
    )
    gate: dict[str, Any] = field(
        default_factory=lambda: {"max_recall_drop": 0.4, "shipped_max_recall_drop": 0.05,
                                 "shipped_max_false_alarm_rise": 0.05}
    )  # fmt: skip
    shadow_window_s: float = 5.0
    canary_healthy_s: float = 5.0
    timeout_s: float = 600.0

    def faults(self) -> list[tuple[float, float, str]]:
        """``(at_s, duration_s, fault)`` of every injected fault, cycling through FAULTS."""
        count = int((self.horizon_s - self.first_fault_s) / self.fault_every_s)
        return [
            (
                self.first_fault_s + i * self.fault_every_s,
                self.fault_lasts_s,
                FAULTS[i % len(FAULTS)],
            )
            for i in range(max(count, 0))
        ]

    def source(self) -> dict[str, Any]:
        """The pipeline's ``source:``: the simulated spindle with its faults and drift."""
        return {
            "type": "simulated_vibration",
            "seed": self.seed,
            "speed": self.speed,
            "schedule": [{"at_s": a, "duration_s": d, "fault": f} for a, d, f in self.faults()],
            "drift": {"at_s": self.drift_at_s, "shaft_hz": self.drifted_shaft_hz},
        }

    def fault_near(self, t_s: float) -> tuple[str | None, bool]:
        """The fault an alarm at ``t_s`` belongs to, and whether ``t_s`` is in a margin only."""
        for at_s, duration_s, fault in self.faults():
            if at_s <= t_s < at_s + duration_s + MARGIN_AFTER_S:
                return fault, False
            if at_s - MARGIN_BEFORE_S <= t_s < at_s:
                return fault, True
        return None, False


COLLECT = {"events": True, "before": 1, "after": 8, "max_per_minute": 600}
"""The pipeline's ``collect:``: the windows around each alarm go to the cloud."""


@dataclass(frozen=True)
class Rates:
    """One model on one stretch of simulated time: its false alarms and its catches."""

    version: str
    span_s: float
    false_alarms: int
    normal_s: float
    faults: int
    caught: int

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms * 3600.0 / self.normal_s if self.normal_s > 0 else 0.0

    @property
    def recall(self) -> float:
        return self.caught / self.faults if self.faults else 0.0

    def line(self) -> str:
        return (
            f"{self.version}: {self.false_alarms} false alarms in {self.normal_s / 60:.1f} normal "
            f"minutes ({self.false_alarms_per_hour:.1f}/h), {self.caught}/{self.faults} "
            f"faults caught (recall {self.recall:.2f})"
        )


def sim_s(event: dict[str, Any], t0: float) -> float:
    """When an event's window was measured, in the simulated seconds of a source started at
    wall-clock ``t0``."""
    return datetime.fromisoformat(event["ts"]).timestamp() - t0


def measure(
    scenario: DriftScenario,
    events: list[dict[str, Any]],
    version: str,
    span: tuple[float, float],
    t0: float,
) -> Rates:
    """``version``'s alarm starts in ``span`` (``[lo, hi)``) against the injected faults
    fully inside."""
    lo, hi = span
    inside = [(a, d) for a, d, _ in scenario.faults() if lo <= a and a + d <= hi]
    starts = [
        sim_s(e, t0) for e in events
        if e["state"] == "start" and e["model_version"] == version and lo <= sim_s(e, t0) < hi
    ]  # fmt: skip
    false_alarms = sum(1 for t in starts if scenario.fault_near(t) == (None, False))
    caught = sum(
        1
        for a, d in inside
        if any(a - MARGIN_BEFORE_S <= t < a + d + MARGIN_AFTER_S for t in starts)
    )
    faulty = sum(
        max(0.0, min(hi, a + d + MARGIN_AFTER_S) - max(lo, a - MARGIN_BEFORE_S))
        for a, d, _ in scenario.faults()
    )
    return Rates(version, hi - lo, false_alarms, (hi - lo) - faulty, len(inside), caught)


@dataclass
class LoopResult:
    """What the loop measured and how long each step took (wall seconds)."""

    healthy: Rates | None = None
    before: Rates | None = None
    after: Rates | None = None
    steps: list[tuple[str, float]] = field(default_factory=list)
    labelled: dict[str, int] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    drift_to_serving_s: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{name}: {seconds:.1f} s" for name, seconds in self.steps]
        for title, rates in (("healthy", self.healthy), ("before", self.before),
                             ("after", self.after)):  # fmt: skip
            if rates is not None:
                out.append(f"{title} - {rates.line()}")
        out.append(f"drift to {self.version} serving: {self.drift_to_serving_s / 60:.1f} min")
        return out


class LoopTimeoutError(RuntimeError):
    """A step did not finish in the scenario's time; the message says which."""


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise LoopTimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)
    return result
