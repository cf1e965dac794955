"""The source registry: one declaration per source, from which the config union, the
factories and the camera set all follow."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from edge_agent.pipelines.config import PipelineConfig
from edge_agent.sources.camera import OpenCvSource, OpenCvSourceConfig
from edge_agent.sources.registry import (
    CAMERA_SOURCE_TYPES,
    DECLARED,
    SOURCE_TYPES,
    SourceConfig,
    build_source,
)
from edge_agent.sources.simulated import SimulatedVibrationSource
from edge_agent.sources.synthetic_camera import SyntheticSceneSource

EXAMPLES: dict[str, dict[str, Any]] = {
    "simulated_vibration": {"type": "simulated_vibration"},
    "opencv": {"type": "opencv", "url": "rtsp://camera.local/stream"},
    "image_folder": {"type": "image_folder", "path": "frames"},
    "synthetic_scene": {"type": "synthetic_scene"},
}
"""A minimal valid config of every source type."""


def test_each_source_is_declared_once_under_its_configs_type() -> None:
    assert len(SOURCE_TYPES) == len(DECLARED)
    assert set(SOURCE_TYPES) == set(EXAMPLES)
    for name, declared in SOURCE_TYPES.items():
        assert get_args(declared.config.model_fields["type"].annotation) == (name,)


def test_the_config_union_is_the_declared_configs() -> None:
    adapter = TypeAdapter(SourceConfig)
    for name, data in EXAMPLES.items():
        assert type(adapter.validate_python(data)) is SOURCE_TYPES[name].config
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        adapter.validate_python({"type": "thermometer"})


def test_cameras_are_the_sources_declared_as_cameras() -> None:
    assert {"opencv", "image_folder", "synthetic_scene"} == CAMERA_SOURCE_TYPES
    for name, data in EXAMPLES.items():
        pipeline = PipelineConfig.model_validate(
            {
                "name": "p",
                "source": data,
                "model": {"name": "m", "manifest": "models/manifest.json"},
            }
        )
        assert pipeline.is_camera == (name in CAMERA_SOURCE_TYPES)


def test_build_source_uses_the_declared_factory() -> None:
    adapter = TypeAdapter(SourceConfig)
    simulated = build_source(adapter.validate_python(EXAMPLES["simulated_vibration"]))
    assert isinstance(simulated, SimulatedVibrationSource)
    scene = build_source(adapter.validate_python(EXAMPLES["synthetic_scene"]))
    assert isinstance(scene, SyntheticSceneSource)
    camera = build_source(OpenCvSourceConfig(type="opencv", device=0))
    assert isinstance(camera, OpenCvSource)
