"""The source registry: one declaration per source, from which the config union, the
factories and the camera set all follow."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from edge_agent.pipelines.config import PipelineConfig
from edge_agent.sources.camera import OpenCvSource, OpenCvSourceConfig
from edge_agent.sources.csv import CsvSourceConfig
from edge_agent.sources.registry import (
    CAMERA_SOURCE_TYPES,
    DECLARED,
    READING_SOURCE_TYPES,
    SOURCE_TYPES,
    SourceConfig,
    build_source,
)
from edge_agent.sources.simulated import SimulatedVibrationSource
from edge_agent.sources.synthetic_camera import SyntheticSceneSource
from edge_agent.sources.windows import WindowConfig, WindowedSource
from shared.errors import ConfigError

EXAMPLES: dict[str, dict[str, Any]] = {
    "simulated_vibration": {"type": "simulated_vibration"},
    "opencv": {"type": "opencv", "url": "rtsp://camera.local/stream"},
    "image_folder": {"type": "image_folder", "path": "frames"},
    "synthetic_scene": {"type": "synthetic_scene"},
    "csv": {"type": "csv", "path": "press.csv", "rate_hz": 10},
    "mqtt": {"type": "mqtt", "topic": "plant/press/temp", "channels": {"temp": "$"}},
    "modbus": {"type": "modbus", "host": "127.0.0.1", "channels": {"rpm": {"address": 0}}},
    "opcua": {
        "type": "opcua",
        "endpoint": "opc.tcp://127.0.0.1:4840",
        "channels": {"t": "ns=2;i=7"},
    },
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
        window = {"window": {"size": 8}} if name in READING_SOURCE_TYPES else {}
        pipeline = PipelineConfig.model_validate(
            {
                "name": "p",
                "source": data,
                "model": {"name": "m", "manifest": "models/manifest.json"},
                **window,
            }
        )
        assert pipeline.is_camera == (name in CAMERA_SOURCE_TYPES)


def test_a_device_source_needs_a_window_and_only_it_takes_one() -> None:
    model = {"name": "m", "manifest": "models/manifest.json"}
    with pytest.raises(ValidationError, match="a csv source needs a `window` section"):
        PipelineConfig.model_validate({"name": "p", "source": EXAMPLES["csv"], "model": model})
    with pytest.raises(ValidationError, match="`window` applies to device sources"):
        PipelineConfig.model_validate(
            {"name": "p", "source": EXAMPLES["opencv"], "model": model, "window": {"size": 4}}
        )
    assert {"csv", "mqtt", "modbus", "opcua"} == READING_SOURCE_TYPES


def test_a_device_source_is_built_behind_its_window(tmp_path: Path) -> None:
    data = tmp_path / "press.csv"
    data.write_text("t,temp\n" + "".join(f"{i},{20 + i % 3}\n" for i in range(12)))
    config = CsvSourceConfig(type="csv", path=data, timestamp="t", speed=0)
    source = build_source(config, WindowConfig(size=4, rate_hz=1.0))
    assert isinstance(source, WindowedSource)
    samples = list(source.samples(threading.Event()))
    assert [s.data.shape for s in samples] == [(1, 4)] * 3
    with pytest.raises(ConfigError, match="needs the pipeline's `window`"):
        build_source(config)


def test_build_source_uses_the_declared_factory() -> None:
    adapter = TypeAdapter(SourceConfig)
    simulated = build_source(adapter.validate_python(EXAMPLES["simulated_vibration"]))
    assert isinstance(simulated, SimulatedVibrationSource)
    scene = build_source(adapter.validate_python(EXAMPLES["synthetic_scene"]))
    assert isinstance(scene, SyntheticSceneSource)
    camera = build_source(OpenCvSourceConfig(type="opencv", device=0))
    assert isinstance(camera, OpenCvSource)
