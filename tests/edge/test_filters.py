"""Threshold + debounce (N of M) and the event lifecycle: exhaustive and property tests."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import ThresholdFilterConfig
from edge_agent.filters import Decision, ThresholdDebounce, build_filter

VALID_NM = [(n, m) for m in range(1, 6) for n in range(1, m + 1) if 2 * n > m]


def run(
    f: ThresholdDebounce, scores: list[float], labels: list[str] | None = None
) -> list[Decision]:
    labels = labels or ["fault"] * len(scores)
    out = []
    for seq, (score, label) in enumerate(zip(scores, labels, strict=True)):
        decision = f.step(seq, score, label)
        if decision is not None:
            out.append(decision)
    return out


def reference(above: tuple[bool, ...], n: int, m: int) -> list[tuple[str, int]]:
    """The rule written as plainly as possible, recounting the last m windows every time."""
    on, out = False, []
    for i in range(len(above)):
        last = above[max(0, i - m + 1) : i + 1]
        if not on and sum(last) >= n:
            on = True
            out.append(("start", i))
        elif on and len(last) - sum(last) >= n:
            on = False
            out.append(("end", i))
    return out


@pytest.mark.parametrize(("n", "m"), VALID_NM)
def test_matches_reference_on_every_sequence_up_to_length_10(n: int, m: int) -> None:
    for above in itertools.product((False, True), repeat=10):
        f = ThresholdDebounce(0.5, n, m)
        got = [(d.state, d.seq) for d in run(f, [0.9 if a else 0.1 for a in above])]
        assert got == reference(above, n, m), above


def test_one_fault_is_one_start_and_one_end_with_peak_and_label() -> None:
    f = ThresholdDebounce(0.8, 3, 4)
    scores = [0.1] * 5 + [0.85, 0.95, 0.9, 0.99, 0.7, 0.9, 0.92] + [0.1] * 5
    labels = ["x"] * 5 + ["imbalance", "impact", "imbalance", "impact", "x", "impact", "impact"]
    labels += ["x"] * 5
    decisions = run(f, scores, labels)
    assert [d.state for d in decisions] == ["start", "end"]
    start, end = decisions
    assert start.seq == 7  # the third window above threshold
    assert start.label == "imbalance"  # most frequent among the triggering windows
    assert start.score == 0.95  # highest of the triggering windows
    assert end.label == "imbalance"
    assert end.score == 0.99  # peak over the whole event
    assert end.start_seq == 7
    assert end.seq == 14  # the third window below threshold after the fault


def test_a_score_equal_to_the_threshold_counts_as_above() -> None:
    decisions = run(ThresholdDebounce(0.8, 1, 1), [0.8, 0.79])
    assert [d.state for d in decisions] == ["start", "end"]


def test_isolated_spikes_do_not_start_an_event() -> None:
    assert run(ThresholdDebounce(0.8, 3, 4), [0.1, 0.99, 0.1, 0.1, 0.99, 0.1, 0.99, 0.1]) == []


def test_close_ends_an_open_event_only() -> None:
    f = ThresholdDebounce(0.8, 2, 3)
    assert f.close(0) is None
    run(f, [0.9, 0.95])
    assert f.active
    closed = f.close(5)
    assert closed == Decision("end", "fault", 0.95, 5, 1)
    assert [f.active] == [False]  # (a list, so mypy does not keep the narrowing above)
    assert f.close(6) is None


def test_invalid_debounce_is_refused() -> None:
    with pytest.raises(ValueError, match="m/2 < n <= m"):
        ThresholdDebounce(0.8, 2, 4)


def test_registry_builds_a_fresh_filter_per_call() -> None:
    config = ThresholdFilterConfig()
    a, b = build_filter(config), build_filter(config)
    assert a is not b
    assert isinstance(a, ThresholdDebounce)


scores_st = st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=200)
nm_st = st.sampled_from(VALID_NM)


@given(scores=scores_st, nm=nm_st, threshold=st.floats(min_value=0.01, max_value=1.0))
def test_starts_and_ends_alternate_beginning_with_start(
    scores: list[float], nm: tuple[int, int], threshold: float
) -> None:
    decisions = run(ThresholdDebounce(threshold, *nm), scores)
    states = [d.state for d in decisions]
    assert states == ["start", "end"] * (len(states) // 2) + ["start"] * (len(states) % 2)


@given(scores=scores_st, nm=nm_st)
def test_an_end_carries_its_start_label_and_the_peak(
    scores: list[float], nm: tuple[int, int]
) -> None:
    decisions = run(ThresholdDebounce(0.5, *nm), scores)
    for start, end in zip(decisions[::2], decisions[1::2], strict=False):
        assert end.label == start.label
        assert end.start_seq == start.seq
        assert end.score == max(
            scores[start.seq - nm[1] + 1 if start.seq >= nm[1] else 0 : end.seq + 1]
        )
        assert start.score <= end.score


@given(
    score=st.floats(min_value=0.0, max_value=1.0),
    length=st.integers(min_value=0, max_value=100),
    nm=nm_st,
)
def test_a_constant_input_never_flaps(score: float, length: int, nm: tuple[int, int]) -> None:
    decisions = run(ThresholdDebounce(0.8, *nm), [score] * length)
    expected = ["start"] if score >= 0.8 and length >= nm[0] else []
    assert [d.state for d in decisions] == expected


@given(
    labels=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=5),
    nm=nm_st,
)
def test_start_label_is_the_most_frequent_among_triggering_windows(
    labels: list[str], nm: tuple[int, int]
) -> None:
    n, m = nm
    labels = (labels * m)[:n]
    decisions = run(ThresholdDebounce(0.5, n, m), [0.9] * n, labels)
    assert len(decisions) == 1
    counts = Counter(labels)
    assert counts[decisions[0].label] == max(counts.values())
