"""The candidate against the serving version: both measured by the trainer's own function on
the job's held-out split and on the shipped test set, and the job's gate applied.

The report keeps every figure and every check with its numbers; it is stored with the
version it let in, or is the reason a job was rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloud_api.training.spec import Gate
from models.quality import EMPTY, Quality


@dataclass(frozen=True)
class Check:
    """One condition of the gate, with the figures it compared."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Report:
    """Base and candidate on each set, and the gate's verdict."""

    base: dict[str, Quality]
    candidate: dict[str, Quality]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(check.passed for check in self.checks)

    def failures(self) -> str:
        """The checks that failed, in one sentence with their numbers."""
        return "; ".join(check.detail for check in self.checks if not check.passed)

    def as_dict(self) -> dict[str, Any]:
        """The report as stored (JSON)."""
        return {
            "passed": self.passed,
            "sets": {
                name: {"base": self.base[name].as_dict(), "candidate": quality.as_dict()}
                for name, quality in self.candidate.items()
            },
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
        }


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _no_worse(
    name: str, what: str, base: float | None, candidate: float | None, *, slack: float,
    higher_is_better: bool,
) -> Check:  # fmt: skip
    """``candidate`` no worse than ``base`` by more than ``slack`` (skipped when unmeasured)."""
    if base is None or candidate is None:
        return Check(name, True, f"{what}: not measured (no such windows)")
    worse = base - candidate if higher_is_better else candidate - base
    passed = worse <= slack + 1e-12
    verb = "within" if passed else "exceeds"
    return Check(
        name,
        passed,
        f"{what} {_figure(base)} -> {_figure(candidate)} ({verb} the allowed {slack:g})",
    )


def judge(base: dict[str, Quality], candidate: dict[str, Quality], gate: Gate) -> Report:
    """The report of ``candidate`` against ``base`` on the ``held_out`` and (if the trainer
    has one) ``shipped`` sets."""
    held_base, held_cand = base["held_out"], candidate["held_out"]
    ship_base, ship_cand = base.get("shipped", EMPTY), candidate.get("shipped", EMPTY)
    checks: list[Check] = []
    if gate.require_false_alarm_drop:
        if held_base.false_alarm_rate is None or held_cand.false_alarm_rate is None:
            checks.append(
                Check(
                    "held_out.false_alarm_rate",
                    False,
                    "held-out false-alarm rate cannot be measured: the held-out split has no "
                    "normal windows",
                )
            )
        else:
            dropped = held_cand.false_alarm_rate < held_base.false_alarm_rate
            checks.append(
                Check(
                    "held_out.false_alarm_rate",
                    dropped,
                    f"held-out false-alarm rate {_figure(held_base.false_alarm_rate)} -> "
                    f"{_figure(held_cand.false_alarm_rate)} "
                    f"({'down' if dropped else 'not down'})",
                )
            )
    checks += [
        _no_worse(
            "held_out.recall", "held-out recall", held_base.recall, held_cand.recall,
            slack=gate.max_recall_drop, higher_is_better=True,
        ),
        _no_worse(
            "shipped.recall", "shipped test set recall", ship_base.recall, ship_cand.recall,
            slack=gate.shipped_max_recall_drop, higher_is_better=True,
        ),
        _no_worse(
            "shipped.false_alarm_rate", "shipped test set false-alarm rate",
            ship_base.false_alarm_rate, ship_cand.false_alarm_rate,
            slack=gate.shipped_max_false_alarm_rise, higher_is_better=False,
        ),
    ]  # fmt: skip
    return Report(base=base, candidate=candidate, checks=checks)
