"""Health windows: for a while after a swap, the new model's inference errors and times are
watched, and a verdict says whether it stays or the previous model comes back.

A window fails at once when the pipeline counts more than ``max_errors`` inference errors
since the swap. When it is over, it fails if the median inference time per window since the
swap is more than ``max_latency_factor`` times the previous model's (and over
``latency_floor_ms``); that needs a known baseline and at least ``MIN_LATENCY_SAMPLES`` calls.
The watch reads a pipeline only through ``ServingPipeline``: its name, its model slot, a
copy of its inference record (``InferenceStats``), and a wait for the gap after a sample in
which the updater opens a new session.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_agent.inference.slot import LoadedModel, ModelSlot
from edge_agent.pipelines.base import InferenceStats
from edge_agent.updates.config import UpdatesConfig
from shared.messages import DesiredModel

MIN_LATENCY_SAMPLES = 5
"""Fewer inference times than this in a health window say nothing about the model's speed."""


class ServingPipeline(Protocol):
    """What the updater sees of a pipeline (sensor and camera pipelines both are one)."""

    @property
    def name(self) -> str: ...

    @property
    def slot(self) -> ModelSlot: ...

    def inference_stats(self) -> InferenceStats: ...

    def wait_for_gap(self, timeout_s: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class Marks:
    """Where a pipeline's inference record stood at a swap: a health window counts from here."""

    errors: int
    calls: int
    baseline_s: float
    """The previous model's median inference time per window (0 if unknown)."""


@dataclass(frozen=True, slots=True)
class Watch:
    """A health window under way: the entry being watched and both models of the swap."""

    pipeline: ServingPipeline
    entry: DesiredModel
    new: LoadedModel
    previous: LoadedModel
    deadline: float
    marks: Marks


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a health window ended; ``reason`` says why a model failed it."""

    healthy: bool
    reason: str = ""


def judge(
    stats: InferenceStats, marks: Marks, config: UpdatesConfig, *, over: bool
) -> Verdict | None:
    """The verdict on a window that counts from ``marks`` (``over``: its time is up), or None
    while its outcome is not known."""
    errors = stats.errors - marks.errors
    if errors > config.max_errors:
        first = next((msg for n, msg in stats.recent_errors if n > marks.errors), "")
        return Verdict(False, f"{errors} inference errors in the health window: {first}")
    if not over:
        return None
    calls = stats.calls - marks.calls
    median = median_of_last(stats.latencies, min(calls, len(stats.latencies)))
    limit = max(config.max_latency_factor * marks.baseline_s, config.latency_floor_ms / 1e3)
    if calls >= MIN_LATENCY_SAMPLES and marks.baseline_s > 0 and median > limit:
        return Verdict(
            False,
            f"median inference time {median * 1e3:.3g} ms per window in the health window "
            f"is over {config.max_latency_factor:g} x the previous model's "
            f"{marks.baseline_s * 1e3:.3g} ms",
        )
    return Verdict(True)


def median_of_last(values: Sequence[float], last: int) -> float:
    """The median of the ``last`` newest values (0 if there are none)."""
    if last <= 0:
        return 0.0
    return float(statistics.median(list(values)[-last:]))


class HealthWatch:
    """The health windows under way (one per pipeline at most) and the swaps they count from."""

    def __init__(self, config: UpdatesConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._watches: dict[str, Watch] = {}
        self._calls_at_swap: dict[str, int] = {}

    @property
    def window_s(self) -> float:
        """How long a window lasts (unless errors end it sooner)."""
        return self._config.health_window_s

    def swapped(self, pipeline: ServingPipeline) -> None:
        """Note a swap: the running model's inference times start here."""
        self._calls_at_swap[pipeline.name] = pipeline.inference_stats().calls

    def marks(self, pipeline: ServingPipeline) -> Marks:
        """The marks to take just before a swap; the baseline is the running model's times
        only (those since its own swap), not those of a model before it."""
        stats = pipeline.inference_stats()
        since_swap = stats.calls - self._calls_at_swap.get(pipeline.name, 0)
        return Marks(stats.errors, stats.calls, median_of_last(stats.latencies, since_swap))

    def start(
        self, pipeline: ServingPipeline, entry: DesiredModel, new: LoadedModel,
        previous: LoadedModel, marks: Marks,
    ) -> Watch:  # fmt: skip
        """Open the window of the swap from ``previous`` to ``new``, made just after ``marks``."""
        deadline = self._clock() + self._config.health_window_s
        watch = Watch(pipeline, entry, new, previous, deadline, marks)
        self._watches[pipeline.name] = watch
        return watch

    def watching(self, name: str) -> bool:
        """Whether pipeline ``name`` is in a health window."""
        return name in self._watches

    def ended(self) -> list[tuple[Watch, Verdict]]:
        """The windows whose outcome is known now, with their verdicts; they are closed."""
        done: list[tuple[Watch, Verdict]] = []
        for name, watch in list(self._watches.items()):
            over = self._clock() >= watch.deadline
            verdict = judge(watch.pipeline.inference_stats(), watch.marks, self._config, over=over)
            if verdict is not None:
                del self._watches[name]
                done.append((watch, verdict))
        return done
