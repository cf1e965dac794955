"""The simulated sensor source: an accelerometer on a simulated machine with a fault schedule."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal

from pydantic import Field, field_validator

from edge_agent.config_types import StrictConfig
from edge_agent.sources.machine_physics import FAULTS, MachineSpec, SimulatedMachine
from edge_agent.sources.sample import Sample, simulated_clock


class FaultWindow(StrictConfig):
    """A fault the simulated machine shows, in simulated seconds from the source's start."""

    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    fault: str
    severity: float = Field(default=1.0, gt=0, le=1)

    @field_validator("fault")
    @classmethod
    def _known_fault(cls, value: str) -> str:
        if value not in FAULTS:
            raise ValueError(f"expected one of {', '.join(FAULTS)}")
        return value


class DriftConfig(StrictConfig):
    """A change of the machine's normal at ``at_s`` simulated seconds: from then on its shaft
    turns at ``shaft_hz`` (a new speed: a model trained on the old normal raises false
    alarms); scheduled faults still appear, at the new speed."""

    at_s: float = Field(ge=0)
    shaft_hz: float = Field(gt=0)


class SimulatedVibrationSourceConfig(StrictConfig):
    """An accelerometer on a simulated rotating machine, with a scripted fault schedule."""

    type: Literal["simulated_vibration"]
    seed: int = 0
    sample_rate_hz: float = Field(default=12800.0, gt=0)
    window: int = Field(default=2048, ge=16)
    shaft_hz: float = Field(default=29.5, gt=0)
    speed: float = Field(default=1.0, ge=0, description="1.0 = real time, 0 = as fast as possible")
    schedule: list[FaultWindow] = Field(default_factory=list)
    duration_s: float | None = Field(default=None, gt=0)
    drift: DriftConfig | None = Field(default=None, description="a scheduled change of normal")


class SimulatedVibrationSource:
    """Windows from ``SimulatedMachine``, faulty while the schedule says so.

    Time is simulated: sample ``seq`` covers ``[seq, seq + 1) * period_s`` seconds after
    the start, and its ``ts`` is the start's wall-clock time plus ``seq * period_s``.
    ``speed`` paces the stream against the wall clock (1.0 = real time, 0 = no waiting).
    """

    def __init__(
        self,
        config: SimulatedVibrationSourceConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._spec = MachineSpec(
            sample_rate_hz=config.sample_rate_hz, window=config.window, shaft_hz=config.shaft_hz
        )
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    @property
    def period_s(self) -> float:
        return self._config.window / self._config.sample_rate_hz

    @property
    def window(self) -> int:
        return self._config.window

    def fault_at(self, t_s: float) -> tuple[str | None, float]:
        """The scheduled fault and severity at simulated time ``t_s`` (None when healthy)."""
        for item in self._config.schedule:
            if item.at_s <= t_s < item.at_s + item.duration_s:
                return item.fault, item.severity
        return None, 1.0

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        machine = SimulatedMachine(self._spec, self._config.seed)
        t0 = self._wall_clock()
        clock = simulated_clock(
            self.period_s,
            stop,
            speed=self._config.speed,
            duration_s=self._config.duration_s,
            monotonic=self._monotonic,
            ready_after_s=self.period_s,  # a window exists once its last value is measured
        )
        drift = self._config.drift
        for seq, t_s in clock:
            if drift is not None and t_s >= drift.at_s:
                machine.spec = replace(self._spec, shaft_hz=drift.shaft_hz)
            fault, severity = self.fault_at(t_s)
            yield Sample(seq, t0 + t_s, machine.window(fault, severity))
