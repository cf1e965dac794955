"""The source registry: every source type declared once, in ``DECLARED``.

A line names the source's config class (whose ``type`` literal is the type's name in YAML),
the class that reads it, and whether it yields camera frames (a camera pipeline runs a
detector, a tracker and a motion gate). The config's discriminated union ``SourceConfig``,
``build_source`` and ``CAMERA_SOURCE_TYPES`` are derived from it: a new source is one module
and one line here. Source modules never import ``edge_agent.config`` (which imports this
registry): they build their config on ``edge_agent.config_types``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar, get_args

from pydantic import Field

from edge_agent.config_types import StrictConfig
from edge_agent.sources.camera import OpenCvSource, OpenCvSourceConfig
from edge_agent.sources.image_folder import ImageFolderSource, ImageFolderSourceConfig
from edge_agent.sources.sample import Source
from edge_agent.sources.simulated import SimulatedVibrationSource, SimulatedVibrationSourceConfig
from edge_agent.sources.synthetic_camera import SyntheticSceneSource, SyntheticSceneSourceConfig

C = TypeVar("C", bound=StrictConfig)


@dataclass(frozen=True, slots=True)
class SourceType(Generic[C]):
    """One kind of source: its config class, the class that reads it, whether it is a camera."""

    config: type[C]
    factory: Callable[[C], Source]
    camera: bool = False

    @property
    def name(self) -> str:
        """The config's ``type``, as written in YAML (the one value of its ``Literal``)."""
        (name,) = get_args(self.config.model_fields["type"].annotation)
        return str(name)


# Not annotated: mypy then checks each line's factory against its own config class.
DECLARED = (
    SourceType(SimulatedVibrationSourceConfig, SimulatedVibrationSource),
    SourceType(OpenCvSourceConfig, OpenCvSource, camera=True),
    SourceType(ImageFolderSourceConfig, ImageFolderSource, camera=True),
    SourceType(SyntheticSceneSourceConfig, SyntheticSceneSource, camera=True),
)
"""Every source the agent can run; the only list of them."""

SOURCE_TYPES: dict[str, SourceType[Any]] = {t.name: t for t in DECLARED}
"""``DECLARED`` by config ``type``."""

CAMERA_SOURCE_TYPES = frozenset(name for name, t in SOURCE_TYPES.items() if t.camera)
"""Sources that yield frames: their pipelines run a detector, a tracker and a motion gate."""


class AnySourceConfig(Protocol):
    """What the agent reads of every source's config without knowing its kind."""

    @property
    def type(self) -> str: ...


if TYPE_CHECKING:
    # A union built at run time is no type to mypy: statically, a source's config is
    # anything with a `type`, which is all the code outside the source itself reads.
    SourceConfig = AnySourceConfig
else:
    SourceConfig = Annotated[
        functools.reduce(operator.or_, (t.config for t in DECLARED)),
        Field(discriminator="type"),
    ]
    """Every source's config, told apart by ``type`` (an unknown type names the known ones)."""


def build_source(config: SourceConfig) -> Source:
    """A new source for the config's ``type``."""
    return SOURCE_TYPES[config.type].factory(config)
