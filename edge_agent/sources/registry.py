"""The source registry: config ``type`` -> factory (a table, not an if/elif chain)."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import SourceConfig
from edge_agent.sources.sample import Source
from edge_agent.sources.sensor import SimulatedVibrationSource

SourceFactory = Callable[[SourceConfig], Source]

SOURCES: dict[str, SourceFactory] = {
    "simulated_vibration": SimulatedVibrationSource,
}


def build_source(config: SourceConfig) -> Source:
    """A new source for the config's ``type``."""
    return SOURCES[config.type](config)
