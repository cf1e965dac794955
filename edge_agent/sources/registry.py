"""The source registry: every source type declared once, in ``DECLARED``.

A line names the source's config class (whose ``type`` literal is the type's name in YAML),
the function or class that reads it, and what it yields: camera frames (a camera pipeline
runs a detector, a tracker and a motion gate), windows, or timestamped readings (a device:
the pipeline's ``window`` section cuts them into model inputs, see ``windows.py``). The
config's discriminated union ``SourceConfig``, ``build_source``, ``CAMERA_SOURCE_TYPES`` and
``READING_SOURCE_TYPES`` are derived from it: a new source is one module
and one line here. Source modules never import ``edge_agent.config`` (which imports this
registry): they build their config on ``edge_agent.config_types``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Protocol, TypeVar, get_args

from pydantic import Field

from edge_agent.config_types import StrictConfig
from edge_agent.sources import csv, modbus, mqtt, opcua
from edge_agent.sources.camera import OpenCvSource, OpenCvSourceConfig
from edge_agent.sources.image_folder import ImageFolderSource, ImageFolderSourceConfig
from edge_agent.sources.readings import ReadingSource
from edge_agent.sources.sample import Source
from edge_agent.sources.simulated import SimulatedVibrationSource, SimulatedVibrationSourceConfig
from edge_agent.sources.synthetic_camera import SyntheticSceneSource, SyntheticSceneSourceConfig
from edge_agent.sources.windows import WindowConfig, WindowedSource
from shared.errors import ConfigError

C = TypeVar("C", bound=StrictConfig)


@dataclass(frozen=True, slots=True)
class _Declared(Generic[C]):
    config: type[C]

    @property
    def name(self) -> str:
        """The config's ``type``, as written in YAML (the one value of its ``Literal``)."""
        (name,) = get_args(self.config.model_fields["type"].annotation)
        return str(name)


@dataclass(frozen=True, slots=True)
class SourceType(_Declared[C]):
    """A source that yields samples itself: frames (``camera``) or ready windows."""

    factory: Callable[[C], Source]
    camera: bool = False
    readings: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ReadingSourceType(_Declared[C]):
    """A device source: it yields readings, which the pipeline's ``window`` cuts up."""

    factory: Callable[[C], ReadingSource]
    camera: ClassVar[bool] = False
    readings: ClassVar[bool] = True


# Not annotated: mypy then checks each line's factory against its own config class.
DECLARED = (
    SourceType(SimulatedVibrationSourceConfig, SimulatedVibrationSource),
    SourceType(OpenCvSourceConfig, OpenCvSource, camera=True),
    SourceType(ImageFolderSourceConfig, ImageFolderSource, camera=True),
    SourceType(SyntheticSceneSourceConfig, SyntheticSceneSource, camera=True),
    ReadingSourceType(csv.CsvSourceConfig, csv.build),
    ReadingSourceType(mqtt.MqttSourceConfig, mqtt.build),
    ReadingSourceType(modbus.ModbusSourceConfig, modbus.build),
    ReadingSourceType(opcua.OpcuaSourceConfig, opcua.build),
)
"""Every source the agent can run; the only list of them."""

SOURCE_TYPES: dict[str, SourceType[Any] | ReadingSourceType[Any]] = {t.name: t for t in DECLARED}
"""``DECLARED`` by config ``type``."""

CAMERA_SOURCE_TYPES = frozenset(name for name, t in SOURCE_TYPES.items() if t.camera)
"""Sources that yield frames: their pipelines run a detector, a tracker and a motion gate."""

READING_SOURCE_TYPES = frozenset(name for name, t in SOURCE_TYPES.items() if t.readings)
"""Device sources: their pipelines need a ``window`` section."""


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


def build_source(config: SourceConfig, window: WindowConfig | None = None) -> Source:
    """A new source for the config's ``type``; a device's readings cut by ``window``."""
    declared = SOURCE_TYPES[config.type]
    if not isinstance(declared, ReadingSourceType):
        return declared.factory(config)
    if window is None:
        raise ConfigError(f"a {config.type} source needs the pipeline's `window` section")
    return WindowedSource(declared.factory(config), window)


def check_source(config: SourceConfig, where: str) -> None:
    """What a source can check before it runs (a CSV file read through); a ConfigError
    whose message starts with ``where`` (the key path of the source)."""
    check = getattr(config, "check", None)
    if check is None:
        return
    try:
        check()
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
