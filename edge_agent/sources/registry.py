"""The source registry: config ``type`` -> factory (a table, not an if/elif chain)."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import SourceConfig
from edge_agent.sources.camera import ImageFolderSource, OpenCvSource, SyntheticSceneSource
from edge_agent.sources.sample import Source
from edge_agent.sources.simulated import SimulatedVibrationSource

SourceFactory = Callable[..., Source]
"""A source class: it takes its own member of ``SourceConfig``."""

SOURCES: dict[str, SourceFactory] = {
    "simulated_vibration": SimulatedVibrationSource,
    "opencv": OpenCvSource,
    "image_folder": ImageFolderSource,
    "synthetic_scene": SyntheticSceneSource,
}


def build_source(config: SourceConfig) -> Source:
    """A new source for the config's ``type``."""
    return SOURCES[config.type](config)
