"""The edge benchmarks' paired figures, on made-up per-window times (no timing measured)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.edge import PairedRound, min_of_rounds_ratio


def paired(bare: list[float], pipe: list[float], flush_s: float = 0.0) -> PairedRound:
    return PairedRound(np.asarray(bare), np.asarray(pipe), flush_s, events=0)


def test_a_preemption_in_one_round_does_not_move_the_min_of_rounds_ratio() -> None:
    quiet = paired([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 1.0])
    preempted = paired([1.0, 1.0, 1.0, 1.0], [1.0, 9.0, 2.0, 1.0])  # window 1 waited 8 s
    assert quiet.pipe_rate / quiet.bare_rate == pytest.approx(0.8)
    assert preempted.pipe_rate / preempted.bare_rate == pytest.approx(4 / 13)
    assert min_of_rounds_ratio([quiet, preempted]) == pytest.approx(0.8)


def test_windows_that_cost_more_every_round_and_the_flush_still_count() -> None:
    rounds = [paired([1.0, 1.0], [1.0, 3.0], flush_s=2.0), paired([1.0, 1.0], [1.5, 3.0], 4.0)]
    assert min_of_rounds_ratio(rounds) == pytest.approx(2 / (1.0 + 3.0 + 3.0))
