"""The gate, as pure logic: each check with its figures, unmeasured sets passed over, and a
false-alarm drop required only when the gate asks for it."""

from __future__ import annotations

from cloud_api.training.evaluate import judge
from cloud_api.training.spec import Gate
from models.quality import EMPTY, Quality


def quality(far: float | None, recall: float | None) -> Quality:
    return Quality(10, 5, 5, far, recall, None)


def test_the_gate_passes_a_candidate_with_fewer_false_alarms_and_the_same_recall() -> None:
    base = {"held_out": quality(0.4, 1.0), "shipped": quality(0.05, 0.99)}
    good = {"held_out": quality(0.0, 1.0), "shipped": quality(0.06, 0.98)}
    report = judge(base, good, Gate())
    assert report.passed, report.failures()
    assert [c.name for c in report.checks] == [
        "held_out.false_alarm_rate", "held_out.recall", "shipped.recall",
        "shipped.false_alarm_rate",
    ]  # fmt: skip
    assert report.as_dict()["sets"]["held_out"]["candidate"]["false_alarm_rate"] == 0.0


def test_the_gate_names_every_check_that_failed_with_its_figures() -> None:
    base = {"held_out": quality(0.4, 1.0), "shipped": quality(0.05, 0.99)}
    worse = {"held_out": quality(0.4, 0.8), "shipped": quality(0.2, 0.99)}
    report = judge(base, worse, Gate(max_recall_drop=0.1))
    assert not report.passed
    assert report.failures() == (
        "held-out false-alarm rate 0.4000 -> 0.4000 (not down); "
        "held-out recall 1.0000 -> 0.8000 (exceeds the allowed 0.1); "
        "shipped test set false-alarm rate 0.0500 -> 0.2000 (exceeds the allowed 0.02)"
    )
    relaxed = judge(base, worse, Gate(require_false_alarm_drop=False, max_recall_drop=0.2,
                                      shipped_max_false_alarm_rise=0.2))  # fmt: skip
    assert relaxed.passed


def test_sets_without_normal_or_fault_windows_are_not_measured() -> None:
    base = {"held_out": quality(None, 1.0)}
    candidate = {"held_out": quality(None, 1.0)}
    report = judge(base, candidate, Gate())
    assert report.failures() == (
        "held-out false-alarm rate cannot be measured: the held-out split has no normal windows"
    )
    no_drop = judge(base, candidate, Gate(require_false_alarm_drop=False))
    assert no_drop.passed
    assert "shipped" not in no_drop.as_dict()["sets"]
    assert EMPTY.as_dict()["windows"] == 0
