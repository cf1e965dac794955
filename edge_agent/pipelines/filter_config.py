"""The config of a pipeline's filter chain: one class per stage ``type``, and the chain's rules.

``edge_agent.pipelines.filters.STAGES`` has one stage per type of ``FilterStageConfig``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from edge_agent.config_types import OnOffKeysConfig

Level = Annotated[float, Field(allow_inf_nan=False)]


class ThresholdFilterConfig(OnOffKeysConfig):
    """The signal is on at or above ``threshold`` (for anomaly models: 1 - p(normal))."""

    type: Literal["threshold"]
    threshold: Level


class HysteresisFilterConfig(OnOffKeysConfig):
    """The signal turns on at or above ``on`` and off only below ``off``."""

    type: Literal["hysteresis"]
    on: Level
    off: Level

    @model_validator(mode="after")
    def _ordered(self) -> HysteresisFilterConfig:
        if not self.off < self.on:
            raise ValueError(f"need off < on, got on={self.on}, off={self.off}")
        return self


class DebounceFilterConfig(OnOffKeysConfig):
    """The on/off state changes only when ``n`` of the last ``m`` raw states agree."""

    type: Literal["debounce"]
    n: int = Field(ge=1)
    m: int = Field(ge=1)

    @model_validator(mode="after")
    def _majority(self) -> DebounceFilterConfig:
        # With 2n > m, "n on" and "n off" cannot both hold, so the state never flaps.
        if self.n > self.m or 2 * self.n <= self.m:
            raise ValueError(f"need m/2 < n <= m, got n={self.n}, m={self.m}")
        return self


class DeadbandFilterConfig(OnOffKeysConfig):
    """A value report (update, instant) passes only if it moved >= ``delta`` since the last."""

    type: Literal["deadband"]
    delta: float = Field(gt=0, allow_inf_nan=False)


class ReportIntervalFilterConfig(OnOffKeysConfig):
    """Value reports no closer than ``min_s``; while on, one at least every ``max_s``."""

    type: Literal["report_interval"]
    min_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> ReportIntervalFilterConfig:
        if self.max_s is None and self.min_s == 0:
            raise ValueError("give min_s > 0, max_s, or both")
        if self.max_s is not None and self.max_s < self.min_s:
            raise ValueError(f"need min_s <= max_s, got min_s={self.min_s}, max_s={self.max_s}")
        return self


class RateLimitFilterConfig(OnOffKeysConfig):
    """A token bucket on emitted events: ``burst`` at once, ``per_s`` sustained."""

    type: Literal["rate_limit"]
    per_s: float = Field(gt=0, allow_inf_nan=False)
    burst: int = Field(default=1, ge=1)


class DedupFilterConfig(OnOffKeysConfig):
    """Drop an event equal in (key, state, label) to one emitted less than ``window_s`` ago."""

    type: Literal["dedup"]
    window_s: float = Field(gt=0, allow_inf_nan=False)


FilterStageConfig = Annotated[
    ThresholdFilterConfig
    | HysteresisFilterConfig
    | DebounceFilterConfig
    | DeadbandFilterConfig
    | ReportIntervalFilterConfig
    | RateLimitFilterConfig
    | DedupFilterConfig,
    Field(discriminator="type"),
]
"""Every filter stage; the engine's registry in ``edge_agent.pipelines.filters`` has one per
type."""

LEVEL_STAGES = ("threshold", "hysteresis")


def default_filters(threshold: float = 0.8) -> list[FilterStageConfig]:
    """A sensor pipeline's chain when its config gives none: threshold 0.8 (a score model:
    its calibrated threshold), debounced 3 of 4."""
    return [
        ThresholdFilterConfig(type="threshold", threshold=threshold),
        DebounceFilterConfig(type="debounce", n=3, m=4),
    ]


CAMERA_DEFAULT_FILTERS: list[dict[str, Any]] = [{"type": "report_interval", "min_s": 5.0}]
"""A camera's tracker decides start/update/end itself; by default a moving object is
re-reported at most every 5 s, so a car crossing the scene is a handful of messages."""


def _check_stage_order(stages: list[FilterStageConfig]) -> list[FilterStageConfig]:
    """State stages (one level stage, then an optional debounce) come before report stages."""
    types = [s.type for s in stages]
    levels = [i for i, t in enumerate(types) if t in LEVEL_STAGES]
    if len(levels) > 1:
        raise ValueError("at most one of threshold, hysteresis")
    if types.count("debounce") > 1:
        raise ValueError("at most one debounce")
    state = [i for i, t in enumerate(types) if t in (*LEVEL_STAGES, "debounce")]
    if state != list(range(len(state))):
        raise ValueError("threshold/hysteresis and debounce come before the other stages")
    if "debounce" in types and (not levels or types.index("debounce") < levels[0]):
        raise ValueError("debounce needs a threshold or hysteresis stage before it")
    return stages


FilterChainConfig = Annotated[list[FilterStageConfig], AfterValidator(_check_stage_order)]
"""A pipeline's ``filters:`` list, its stages in an order the engine can run."""
