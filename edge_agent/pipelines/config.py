"""The config of one pipeline: its source, model, filters, actions, collection and privacy
and, for cameras, vision.

Each part's own section comes from that part (sources from ``edge_agent.sources.registry``,
the model from ``edge_agent.inference.config``, filters from ``filter_config``, actions from
``edge_agent.delivery.action_config``, the motion gate and tracking from theirs); this
module only puts them together with the rules that span them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edge_agent.config_types import StrictConfig
from edge_agent.delivery.action_config import ActionConfig
from edge_agent.delivery.escalation_config import EscalateConfig
from edge_agent.inference.config import ModelConfig, RuntimeConfig
from edge_agent.pipelines.collect import CollectConfig
from edge_agent.pipelines.filter_config import (
    CAMERA_DEFAULT_FILTERS,
    FilterChainConfig,
    default_filters,
)
from edge_agent.pipelines.motion import MotionGateConfig
from edge_agent.pipelines.privacy import PrivacyConfig
from edge_agent.pipelines.tracking.lifecycle import TrackingConfig
from edge_agent.sources.registry import CAMERA_SOURCE_TYPES, READING_SOURCE_TYPES, SourceConfig
from edge_agent.sources.windows import WindowConfig
from shared.messages import Name

MIN_SUMMARY_INTERVAL_S = 0.1
"""Summaries are cheap, but one per sample would be raw data again."""


def _legacy_directory(value: Any) -> Any:
    # Thumbnails were once written to a directory named here; they live in the spool now.
    return True if isinstance(value, Path) or (isinstance(value, str) and value) else value


class VisionConfig(StrictConfig):
    """What a camera pipeline does between the frame and the events."""

    motion: MotionGateConfig = Field(default_factory=MotionGateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    score_threshold: float = Field(default=0.5, gt=0, lt=1)
    iou_threshold: float = Field(default=0.45, gt=0, lt=1)
    thumbnails: Annotated[bool, BeforeValidator(_legacy_directory)] = Field(
        default=False,
        description="keep the best crop of every object as a sample in the agent's spool "
        "(same quota, uploaded; only where `privacy.images` lets pixels leave)",
    )


class PipelineConfig(StrictConfig):
    """Source -> model -> filters -> events (to the outbox and local actions)."""

    name: Name
    source: SourceConfig
    window: WindowConfig | None = Field(
        default=None, description="device sources: how their readings become model inputs"
    )
    model: ModelConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    filters: FilterChainConfig = Field(default_factory=default_filters)
    vision: VisionConfig | None = Field(
        default=None, description="camera pipelines only; defaults apply when left out"
    )
    actions: list[ActionConfig] = Field(default_factory=list)
    collect: CollectConfig | None = Field(
        default=None, description="which raw inputs are kept for the cloud; none = off"
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="what pixels may leave (cameras: never)"
    )
    escalate: EscalateConfig | None = Field(
        default=None, description="which edge results go to the cloud model; none = off"
    )
    summary_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="seconds between two summaries of what the pipeline read and sent; 0 = off",
    )

    @model_validator(mode="before")
    @classmethod
    def _camera_defaults(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "filters" not in data
            and isinstance(data.get("source"), dict)
            and data["source"].get("type") in CAMERA_SOURCE_TYPES
        ):
            return {**data, "filters": CAMERA_DEFAULT_FILTERS}
        return data

    @model_validator(mode="after")
    def _vision_goes_with_cameras(self) -> PipelineConfig:
        if self.vision is not None and not self.is_camera:
            raise ValueError(f"`vision` needs a camera source, not {self.source.type!r}")
        return self

    @model_validator(mode="after")
    def _window_goes_with_devices(self) -> PipelineConfig:
        kind = self.source.type
        if kind in READING_SOURCE_TYPES and self.window is None:
            raise ValueError(
                f"a {kind} source needs a `window` section (size; hop, channels, rate_hz as "
                "needed) to turn its readings into model inputs"
            )
        if kind not in READING_SOURCE_TYPES and self.window is not None:
            devices = ", ".join(sorted(READING_SOURCE_TYPES))
            raise ValueError(f"`window` applies to device sources ({devices}), not {kind!r}")
        return self

    @property
    def is_camera(self) -> bool:
        return self.source.type in CAMERA_SOURCE_TYPES

    @property
    def keeps_thumbnails(self) -> bool:
        """Whether it keeps object thumbnails: asked for, and its privacy lets pixels leave."""
        return bool(self.vision and self.vision.thumbnails) and self.privacy.images != "never"

    @field_validator("escalate")
    @classmethod
    def _escalate_lets_input_out(
        cls, value: EscalateConfig | None, info: ValidationInfo
    ) -> EscalateConfig | None:
        privacy, source = info.data.get("privacy"), info.data.get("source")
        camera = source is not None and source.type in CAMERA_SOURCE_TYPES
        if value is not None and camera and privacy is not None and privacy.images == "never":
            raise ValueError(
                "a camera whose privacy lets no pixels out (`images: never`) cannot escalate: "
                "set privacy.images to crops or frames, or remove escalate"
            )
        return value

    @field_validator("summary_interval_s")
    @classmethod
    def _summary_not_a_flood(cls, value: float) -> float:
        if 0 < value < MIN_SUMMARY_INTERVAL_S:
            raise ValueError(f"expected 0 (off) or at least {MIN_SUMMARY_INTERVAL_S} s")
        return value
