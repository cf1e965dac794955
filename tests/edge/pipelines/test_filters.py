"""The filter engine: every stage exhaustively or against a plain reference, and the rules
with algebra as properties (lifecycle alternation, no flapping, bounds of each stage)."""

from __future__ import annotations

import itertools
import typing
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.filter_config import FilterChainConfig, FilterStageConfig
from edge_agent.pipelines.filter_stages import STAGES
from edge_agent.pipelines.filters import Decision, FilterEngine, build_engine

CHAIN = TypeAdapter(FilterChainConfig)
VALID_NM = [(n, m) for m in range(1, 6) for n in range(1, m + 1) if 2 * n > m]


def engine(*stages: dict[str, Any]) -> FilterEngine:
    return build_engine(CHAIN.validate_python(list(stages)))


def threshold(level: float = 0.5) -> dict[str, Any]:
    return {"type": "threshold", "threshold": level}


def debounce(n: int, m: int) -> dict[str, Any]:
    return {"type": "debounce", "n": n, "m": m}


def run(
    f: FilterEngine,
    scores: list[float],
    labels: list[str] | None = None,
    times: list[float] | None = None,
    keys: list[str] | None = None,
) -> list[Decision]:
    labels = labels or ["fault"] * len(scores)
    times = times if times is not None else [i * 0.1 for i in range(len(scores))]
    keys = keys or [""] * len(scores)
    out = []
    for seq, (score, label, ts, key) in enumerate(zip(scores, labels, times, keys, strict=True)):
        decision = f.step(ts, seq, score, label, key)
        if decision is not None:
            out.append(decision)
    return out


def reference(above: tuple[bool, ...], n: int, m: int) -> list[tuple[str, int]]:
    """Debounce written as plainly as possible, recounting the last m states every time."""
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


def hysteresis_reference(scores: list[float], on: float, off: float) -> tuple[bool, ...]:
    state, out = False, []
    for s in scores:
        state = s >= on or (state and s >= off)
        out.append(state)
    return tuple(out)


# -- the registry and the config -----------------------------------------------------------


def test_every_stage_type_in_the_config_has_a_stage_in_the_registry() -> None:
    members = typing.get_args(typing.get_args(FilterStageConfig)[0])
    config_types = {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}
    assert config_types == set(STAGES)


def test_default_chain_is_threshold_0_8_debounced_3_of_4() -> None:
    config = PipelineConfig.model_validate(
        {
            "name": "p",
            "source": {"type": "simulated_vibration"},
            "model": {"name": "m", "manifest": "x"},
        }
    )
    assert [s.model_dump() for s in config.filters] == [
        {"type": "threshold", "threshold": 0.8},
        {"type": "debounce", "n": 3, "m": 4},
    ]


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ([debounce(3, 4), threshold()], "debounce needs a threshold"),
        ([debounce(3, 4)], "debounce needs a threshold"),
        ([threshold(), {"type": "hysteresis", "on": 0.8, "off": 0.5}], "at most one"),
        ([threshold(), {"type": "dedup", "window_s": 1}, debounce(3, 4)], "come before"),
        ([threshold(), debounce(2, 4)], "m/2 < n <= m"),
        ([{"type": "hysteresis", "on": 0.5, "off": 0.5}], "off < on"),
        ([{"type": "report_interval", "min_s": 5, "max_s": 1}], "min_s <= max_s"),
        ([{"type": "report_interval"}], "min_s > 0, max_s"),
        ([{"type": "rate_limit", "per_s": 0}], "greater than 0"),
        ([{"type": "median"}], "does not match any of the expected tags"),
    ],
)
def test_invalid_chains_are_refused(chain: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CHAIN.validate_python(chain)


def test_each_build_has_its_own_state() -> None:
    chain = CHAIN.validate_python([threshold(), debounce(1, 1)])
    a, b = build_engine(chain), build_engine(chain)
    a.step(0.0, 0, 0.9, "x")
    assert a.active()
    assert not b.active()


# -- threshold, debounce and the lifecycle -------------------------------------------------


@pytest.mark.parametrize(("n", "m"), VALID_NM)
def test_matches_reference_on_every_sequence_up_to_length_10(n: int, m: int) -> None:
    for above in itertools.product((False, True), repeat=10):
        f = engine(threshold(), debounce(n, m))
        got = [(d.state, d.seq) for d in run(f, [0.9 if a else 0.1 for a in above])]
        assert got == reference(above, n, m), above


def test_one_fault_is_one_start_and_one_end_with_peak_and_label() -> None:
    f = engine(threshold(0.8), debounce(3, 4))
    scores = [0.1] * 5 + [0.85, 0.95, 0.9, 0.99, 0.7, 0.9, 0.92] + [0.1] * 5
    labels = ["x"] * 5 + ["imbalance", "impact", "imbalance", "impact", "x", "impact", "impact"]
    labels += ["x"] * 5
    decisions = run(f, scores, labels)
    assert [d.state for d in decisions] == ["start", "end"]
    start, end = decisions
    assert start.seq == 7  # the third window above
    assert start.ts == pytest.approx(0.7)
    assert start.label == "imbalance"  # most frequent among the triggering windows
    assert start.score == 0.95  # highest of the triggering windows
    assert start.value == 0.9  # the window that decided it
    assert end.label == "imbalance"
    assert end.score == 0.99  # peak over the whole event
    assert (end.start_seq, end.start_ts) == (7, start.ts)
    assert end.seq == 14  # the third window below threshold after the fault


def test_a_score_equal_to_the_threshold_counts_as_on() -> None:
    decisions = run(engine(threshold(0.8)), [0.8, 0.79])
    assert [d.state for d in decisions] == ["start", "end"]


def test_isolated_spikes_do_not_start_an_event() -> None:
    f = engine(threshold(0.8), debounce(3, 4))
    assert run(f, [0.1, 0.99, 0.1, 0.1, 0.99, 0.1, 0.99, 0.1]) == []


def test_close_ends_an_open_event_only_and_forgets_the_key() -> None:
    f = engine(threshold(), debounce(2, 3))
    assert f.close("", 0.0, 0) is None
    run(f, [0.9, 0.95])
    assert f.active()
    closed = f.close("", 5.0, 5)
    assert closed == Decision("end", "", "fault", 0.95, 0.95, 5, 5.0, 1, 0.1)
    assert not f.active()
    assert f.close("", 6.0, 6) is None


def test_keys_have_independent_lifecycles_and_close_all_ends_the_open_ones() -> None:
    f = engine(threshold(), debounce(2, 3))
    got = run(f, [0.9, 0.1, 0.9, 0.1, 0.1, 0.1], keys=["a", "b", "a", "b", "c", "c"])
    assert [(d.key, d.state) for d in got] == [("a", "start")]
    assert [(d.key, d.state) for d in f.close_all(9.0, 9)] == [("a", "end")]


def test_hysteresis_turns_on_at_on_and_off_below_off_only() -> None:
    f = engine({"type": "hysteresis", "on": 0.8, "off": 0.5})
    got = run(f, [0.7, 0.8, 0.6, 0.5, 0.79, 0.49, 0.79, 0.9])
    assert [(d.state, d.seq) for d in got] == [("start", 1), ("end", 5), ("start", 7)]


LEVELS = [0.1, 0.6, 0.9]  # below off, between, at or above on


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (3, 4)])
def test_hysteresis_then_debounce_matches_reference_on_every_sequence(n: int, m: int) -> None:
    for levels in itertools.product(LEVELS, repeat=7):
        scores = list(levels)
        f = engine({"type": "hysteresis", "on": 0.8, "off": 0.5}, debounce(n, m))
        got = [(d.state, d.seq) for d in run(f, scores)]
        assert got == reference(hysteresis_reference(scores, 0.8, 0.5), n, m), scores


scores_st = st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=200)
nm_st = st.sampled_from(VALID_NM)


@given(scores=scores_st, nm=nm_st, level=st.floats(min_value=0.01, max_value=1.0))
def test_starts_and_ends_alternate_beginning_with_start(
    scores: list[float], nm: tuple[int, int], level: float
) -> None:
    states = [d.state for d in run(engine(threshold(level), debounce(*nm)), scores)]
    assert states == ["start", "end"] * (len(states) // 2) + ["start"] * (len(states) % 2)


@given(scores=scores_st, nm=nm_st)
def test_an_end_carries_its_start_label_and_the_peak(
    scores: list[float], nm: tuple[int, int]
) -> None:
    decisions = run(engine(threshold(), debounce(*nm)), scores)
    for start, end in zip(decisions[::2], decisions[1::2], strict=False):
        assert end.label == start.label
        assert end.start_seq == start.seq
        window_start = start.seq - nm[1] + 1 if start.seq >= nm[1] else 0
        assert end.score == max(scores[window_start : end.seq + 1])
        assert start.score <= end.score


@given(
    score=st.floats(min_value=0.0, max_value=1.0),
    length=st.integers(min_value=0, max_value=100),
    nm=nm_st,
    hysteresis=st.booleans(),
)
def test_a_constant_input_never_flaps(
    score: float, length: int, nm: tuple[int, int], hysteresis: bool
) -> None:
    level = {"type": "hysteresis", "on": 0.8, "off": 0.3} if hysteresis else threshold(0.8)
    decisions = run(engine(level, debounce(*nm)), [score] * length)
    expected = ["start"] if score >= 0.8 and length >= nm[0] else []
    assert [d.state for d in decisions] == expected


@given(scores=scores_st, level=st.floats(min_value=0.01, max_value=1.0))
def test_debounce_1_of_1_is_the_identity(scores: list[float], level: float) -> None:
    bare = run(engine(threshold(level)), scores)
    assert run(engine(threshold(level), debounce(1, 1)), scores) == bare


@given(
    labels=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=5),
    nm=nm_st,
)
def test_start_label_is_the_most_frequent_among_triggering_windows(
    labels: list[str], nm: tuple[int, int]
) -> None:
    n, m = nm
    labels = (labels * m)[:n]
    decisions = run(engine(threshold(), debounce(n, m)), [0.9] * n, labels)
    assert len(decisions) == 1
    counts = Counter(labels)
    assert counts[decisions[0].label] == max(counts.values())


# -- report stages -----------------------------------------------------------------------

gaps_st = st.lists(st.floats(min_value=0.001, max_value=2.0), min_size=1, max_size=150)


def timeline(gaps: list[float]) -> list[float]:
    return list(itertools.accumulate(gaps))


def test_without_deadband_or_report_interval_an_event_is_only_start_and_end() -> None:
    decisions = run(engine(threshold(), {"type": "dedup", "window_s": 1}), [0.9] * 50 + [0.1])
    assert [d.state for d in decisions] == ["start", "end"]


def test_a_chain_without_a_level_stage_reports_every_sample_as_instant() -> None:
    decisions = run(engine(), [0.1, 0.5, 0.7], labels=["a", "b", "c"])
    assert [(d.state, d.value, d.label) for d in decisions] == [
        ("instant", 0.1, "a"),
        ("instant", 0.5, "b"),
        ("instant", 0.7, "c"),
    ]


def test_deadband_reports_updates_that_moved_from_the_start_or_last_update() -> None:
    f = engine(threshold(), {"type": "deadband", "delta": 0.1})
    got = run(f, [0.2, 0.6, 0.65, 0.72, 0.71, 0.95, 0.84, 0.3])
    assert [(d.state, d.value, d.score) for d in got] == [
        ("start", 0.6, 0.6),
        ("update", 0.72, 0.72),
        ("update", 0.95, 0.95),
        ("update", 0.84, 0.95),  # score stays the peak; value is the window's own
        ("end", 0.3, 0.95),
    ]


@given(
    values=st.lists(st.floats(min_value=-100, max_value=100), max_size=150),
    delta=st.floats(0.01, 50),
)
def test_deadband_never_passes_two_reports_closer_than_delta(
    values: list[float], delta: float
) -> None:
    reported = [d.value for d in run(engine({"type": "deadband", "delta": delta}), values)]
    assert all(abs(b - a) >= delta for a, b in itertools.pairwise(reported))
    assert reported[:1] == values[:1]


def test_report_interval_gives_an_open_event_a_heartbeat_and_thins_updates() -> None:
    f = engine(threshold(), {"type": "report_interval", "min_s": 0.5, "max_s": 2.0})
    got = run(f, [0.9] * 12 + [0.1], times=[float(i) * 0.5 for i in range(13)])
    assert [(d.state, d.ts) for d in got] == [
        ("start", 0.0),
        ("update", 0.5),  # an update per sample, no closer than min_s
        ("update", 1.0),
        ("update", 1.5),
        ("update", 2.0),
        ("update", 2.5),
        ("update", 3.0),
        ("update", 3.5),
        ("update", 4.0),
        ("update", 4.5),
        ("update", 5.0),
        ("update", 5.5),
        ("end", 6.0),
    ]
    f = engine(
        threshold(),
        {"type": "deadband", "delta": 0.05},
        {"type": "report_interval", "min_s": 0.5, "max_s": 2.0},
    )
    got = run(f, [0.9] * 12 + [0.1], times=[float(i) * 0.5 for i in range(13)])
    # A steady value: the deadband drops every update, the heartbeat keeps one every max_s.
    assert [(d.state, d.ts) for d in got] == [
        ("start", 0.0),
        ("update", 2.0),
        ("update", 4.0),
        ("end", 6.0),
    ]
    assert got[1].score == 0.9
    assert got[1].label == "fault"


@given(
    gaps=gaps_st,
    values=st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=150, max_size=150),
    min_s=st.floats(0.0, 3.0),
    extra_s=st.floats(0.01, 5.0),
    lifecycle=st.booleans(),
)
def test_report_interval_never_emits_closer_than_min_s_nor_leaves_a_gap_over_max_s(
    gaps: list[float], values: list[float], min_s: float, extra_s: float, lifecycle: bool
) -> None:
    times = timeline(gaps)
    scores = values[: len(times)]
    max_s = min_s + extra_s
    interval = {"type": "report_interval", "min_s": min_s, "max_s": max_s}
    stages = [threshold(), {"type": "deadband", "delta": 0.3}, interval]
    f = engine(*stages) if lifecycle else engine(*stages[1:])
    last: float | None = None
    for seq, (ts, score) in enumerate(zip(times, scores, strict=True)):
        decision = f.step(ts, seq, score, "x")
        if decision is not None:
            if decision.state in ("update", "instant") and last is not None:
                assert decision.ts - last >= min_s
            last = decision.ts
        if not lifecycle or f.active():
            assert last is not None
            assert ts - last < max_s


def test_rate_limit_passes_a_burst_then_per_s_and_mutes_an_event_whose_start_it_drops() -> None:
    f = engine({"type": "rate_limit", "per_s": 1.0, "burst": 2})
    got = run(f, [0.1] * 8, times=[0.0, 0.1, 0.2, 0.3, 1.0, 1.1, 2.0, 2.1])
    assert [d.ts for d in got] == [0.0, 0.1, 1.0, 2.0]
    assert f.counters.dropped["rate_limit"] == 4

    f = engine(threshold(), debounce(1, 1), {"type": "rate_limit", "per_s": 0.1, "burst": 1})
    got = run(f, [0.9, 0.1, 0.9, 0.9, 0.1], keys=["a", "a", "b", "b", "b"])
    # a's start took the only token; b's start is dropped, so its end is held back too.
    assert [(d.key, d.state) for d in got] == [("a", "start"), ("a", "end")]
    assert f.counters.dropped["rate_limit"] == 1
    assert f.counters.muted == 1


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=150),
    per_s=st.floats(0.1, 20.0),
    burst=st.integers(1, 5),
)
def test_rate_limit_never_exceeds_burst_plus_per_s_times_t(
    gaps: list[float], per_s: float, burst: int
) -> None:
    times = timeline(gaps)
    f = engine({"type": "rate_limit", "per_s": per_s, "burst": burst})
    emitted = [d.ts for d in run(f, [0.5] * len(times), times=times)]
    for i, j in itertools.combinations(range(len(emitted)), 2):
        assert j - i + 1 <= burst + per_s * (emitted[j] - emitted[i]) + 1e-6


@given(
    scores=st.lists(st.sampled_from([0.1, 0.9]), max_size=150),
    keys=st.lists(st.sampled_from(["a", "b"]), min_size=150, max_size=150),
    per_s=st.floats(0.1, 5.0),
    window_s=st.floats(0.1, 5.0),
)
def test_every_key_alternates_start_and_end_whatever_the_report_stages_drop(
    scores: list[float], keys: list[str], per_s: float, window_s: float
) -> None:
    f = engine(
        threshold(),
        debounce(1, 1),
        {"type": "deadband", "delta": 0.1},
        {"type": "report_interval", "min_s": 0.2, "max_s": 1.0},
        {"type": "rate_limit", "per_s": per_s},
        {"type": "dedup", "window_s": window_s},
    )
    decisions = run(f, scores, keys=keys[: len(scores)])
    for key in ("a", "b"):
        states = [d.state for d in decisions if d.key == key and d.state != "update"]
        assert states == ["start", "end"] * (len(states) // 2) + ["start"] * (len(states) % 2)
        open_ = False
        for d in (d for d in decisions if d.key == key):
            assert d.state != "update" or open_  # updates only inside an emitted event
            open_ = d.state in ("start", "update")


def test_dedup_drops_an_identical_event_within_the_window_only() -> None:
    f = engine({"type": "dedup", "window_s": 1.0})
    got = run(
        f,
        [0.5] * 6,
        labels=["a", "a", "b", "a", "a", "a"],
        times=[0.0, 0.5, 0.6, 0.99, 1.0, 1.5],
    )
    assert [(d.label, d.ts) for d in got] == [("a", 0.0), ("b", 0.6), ("a", 1.0)]


def test_dedup_never_drops_the_end_of_an_emitted_start() -> None:
    f = engine(threshold(), debounce(1, 1), {"type": "dedup", "window_s": 10.0})
    got = run(f, [0.9, 0.1, 0.9, 0.1, 0.9, 0.1])
    # The second start duplicates the first; it and its end are held back together.
    assert [(d.state, d.seq) for d in got] == [("start", 0), ("end", 1)]
    assert f.counters.muted == 2


@given(
    labels=st.lists(st.sampled_from(["a", "b"]), max_size=100),
    gaps=st.lists(st.floats(0.0, 1.0), min_size=100, max_size=100),
    window_s=st.floats(0.1, 3.0),
    lifecycle=st.booleans(),
)
def test_dedup_twice_is_dedup_once(
    labels: list[str], gaps: list[float], window_s: float, lifecycle: bool
) -> None:
    times = timeline(gaps)[: len(labels)]
    scores = [0.9 if lab == "a" else 0.1 for lab in labels]
    level = [threshold(), debounce(1, 1)] if lifecycle else []
    dedup = {"type": "dedup", "window_s": window_s}
    once = run(engine(*level, dedup), scores, labels, times)
    assert run(engine(*level, dedup, dedup), scores, labels, times) == once
    last: dict[tuple[str, str, str], float] = {}
    for d in once:
        identity = (d.key, d.state, d.label)
        if d.state != "end" and identity in last:
            assert d.ts - last[identity] >= window_s
        last[identity] = d.ts


# -- vision: a tracker's lifecycle through offer and tick --------------------------------


def test_offer_passes_a_trackers_lifecycle_through_the_report_stages() -> None:
    f = engine(
        {"type": "report_interval", "min_s": 1.0, "max_s": 3.0},
        {"type": "dedup", "window_s": 1.0},
    )
    out = [
        f.offer("7", "start", 0.0, 0, 0.6, "person"),
        f.offer("7", "update", 0.5, 1, 0.9, "person"),  # closer than min_s: dropped
        f.offer("7", "update", 1.5, 2, 0.7, "person"),
    ]
    assert [(d.state, d.score, d.value) for d in out if d] == [
        ("start", 0.6, 0.6),
        ("update", 0.9, 0.7),  # the peak includes the dropped update
    ]
    # A stationary object: the tracker says nothing, tick gives it a heartbeat every max_s.
    assert f.tick(3.0, 3) == []
    (beat,) = f.tick(4.5, 4)
    assert (beat.key, beat.state, beat.ts, beat.seq, beat.value) == ("7", "update", 4.5, 4, 0.7)
    end = f.offer("7", "end", 5.0, 5, 0.5, "person")
    assert end is not None
    assert end.state == "end"
    assert end.start_ts == 0.0
    assert f.tick(10.0, 10) == []
    assert not f.active("7")


def test_offer_counts_transitions_that_do_not_fit_the_lifecycle() -> None:
    f = engine()
    assert f.offer("1", "update", 0.0, 0, 0.5, "car") is None
    assert f.offer("1", "end", 0.0, 0, 0.5, "car") is None
    assert f.offer("1", "start", 0.0, 0, 0.5, "car") is not None
    assert f.offer("1", "start", 0.1, 1, 0.5, "car") is None
    assert f.counters.invalid == 3


def test_rate_limited_tracks_are_muted_from_start_to_end() -> None:
    f = engine({"type": "rate_limit", "per_s": 0.001, "burst": 1})
    got = [
        f.offer("1", "start", 0.0, 0, 0.9, "car"),
        f.offer("2", "start", 0.0, 0, 0.9, "car"),
        f.offer("2", "update", 0.1, 1, 0.9, "car"),
        f.offer("1", "end", 0.2, 2, 0.9, "car"),
        f.offer("2", "end", 0.2, 2, 0.9, "car"),
    ]
    assert [(d.key, d.state) for d in got if d] == [("1", "start"), ("1", "end")]
