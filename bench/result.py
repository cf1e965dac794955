"""One benchmark line and its goal, as data: a comparator and a number, judged here.

A goal is on the ratio to the same-run baseline (``Goal.ratio(">=", 0.95)``) or on the
value itself, in the result's unit (``Goal.value("<", 50)`` for a p99 in ms). ``met`` is
``None`` when a result has no goal, or nothing to judge it on (no baseline for a ratio).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

Comparator = Literal[">=", ">", "<=", "<"]
COMPARATORS: dict[Comparator, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Goal:
    """What a result should reach: its ``ratio`` or its ``value`` compared to a number."""

    on: Literal["ratio", "value"]
    comparator: Comparator
    target: float

    @classmethod
    def ratio(cls, comparator: Comparator, target: float) -> Goal:
        return cls("ratio", comparator, target)

    @classmethod
    def value(cls, comparator: Comparator, target: float) -> Goal:
        return cls("value", comparator, target)

    def met(self, measured: float | None) -> bool | None:
        """Whether ``measured`` (the ratio or the value) reaches the goal; None if unknown."""
        if measured is None:
            return None
        # NaN compares False every way: a NaN measurement misses any goal.
        return COMPARATORS[self.comparator](measured, self.target)

    def describe(self, unit: str) -> str:
        suffix = f" {unit}" if self.on == "value" and unit else ""
        return f"{self.on} {self.comparator} {self.target:g}{suffix}"


@dataclass
class Result:
    """One benchmark line: a measured value, its same-run baseline, their ratio and a goal."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: Goal | None = None
    details: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.goal.met(self.ratio if self.goal.on == "ratio" else self.value)

    def to_json(self) -> dict[str, Any]:
        """The stored form: every field, plus ``ratio`` and ``met`` as computed here."""
        return asdict(self) | {"ratio": self.ratio, "met": self.met}

    @staticmethod
    def from_json(data: object) -> Result:
        """Read a stored result back (``ratio`` and ``met`` are recomputed, not trusted)."""
        return _RESULT.validate_python(data)


_RESULT = TypeAdapter(Result)
