"""The agent's whole configuration: one pydantic tree, loaded from one YAML file.

Each part owns its section's class (delivery its broker, outbox and cloud API, health its
exporter, each pipeline's source, model, filters and actions theirs); this module assembles
them into ``AgentConfig`` and owns no part's keys. Every section forbids unknown keys, so a
typo is an error and never a silently ignored setting. ``load_config`` reports errors with
the key path, the file and the line of the offending key. Relative paths in the file are
resolved against the file's directory, so the agent behaves the same whatever its working
directory (systemd, containers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from edge_agent.config_types import StrictConfig
from edge_agent.delivery.config import CloudConfig, MqttConfig, OutboxConfig
from edge_agent.delivery.spool import SpoolConfig
from edge_agent.health import MetricsConfig
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.updates.config import UpdatesConfig
from edge_agent.validation import explain, key_path
from shared.errors import ConfigError
from shared.messages import AgentId


class AgentConfig(StrictConfig):
    """The whole agent."""

    agent_id: AgentId
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cloud: CloudConfig | None = None
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    pipelines: list[PipelineConfig] = Field(min_length=1)

    @field_validator("pipelines")
    @classmethod
    def _unique_names(cls, value: list[PipelineConfig]) -> list[PipelineConfig]:
        names = [p.name for p in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pipeline names must be unique, repeated: {', '.join(duplicates)}")
        return value

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"aiot-edge-{self.agent_id}"

    @property
    def updates_dir(self) -> Path:
        """Where downloaded model versions live (``models/`` beside the outbox by default)."""
        return self.updates.dir or self.outbox.path.parent / "models"

    @property
    def spool_dir(self) -> Path:
        """Where kept samples wait for upload (``samples/`` beside the outbox by default)."""
        return self.spool.dir or self.outbox.path.parent / "samples"


def load_config(path: Path) -> AgentConfig:
    """Read and validate the agent's YAML file; errors name key, file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem}") from None
    if root is None:
        raise ConfigError(f"{path}:1: the config file is empty")
    _reject_duplicate_keys(root, path)
    try:
        return AgentConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, root, path)) from None


def key_line(path: Path, loc: tuple[int | str, ...]) -> str:
    """``file:line: key.path`` of a key of a config file that loaded (for checks that run
    after validation, like a model that does not fit its pipeline's window)."""
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    if root is None:
        return f"{path.name}:1: {key_path(loc)}"
    line, keys = _locate(root, loc)
    return f"{path.name}:{line}: {key_path(keys)}"


def _reject_duplicate_keys(node: yaml.Node, path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently; a config must not."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if key.value in seen:
                raise ConfigError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
            seen.add(key.value)
            _reject_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path)


def _describe(exc: ValidationError, root: yaml.Node, path: Path) -> str:
    lines = [f"{path}: invalid config ({exc.error_count()} error(s))"]
    for error in exc.errors():
        loc = error["loc"]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
        line, keys = _locate(root, loc, missing=error["type"] == "missing")
        where = key_path(keys) or "(top level)"
        lines.append(f"  {path.name}:{line}: {where}: {explain(error, quote_input=True)}")
    return "\n".join(lines)


def _locate(
    root: yaml.Node, loc: tuple[int | str, ...], *, missing: bool = False
) -> tuple[int, tuple[int | str, ...]]:
    """The 1-based line of the deepest node ``loc`` reaches (the key itself where it exists),
    and ``loc`` without the parts that are not keys (union tags, validator names); with
    ``missing``, the last part is a key that is not there, named but at its parent's line."""
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    keys: list[int | str] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                if last and missing:
                    keys.append(part)
                continue  # a union tag or validator name in loc, not a key
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                node = None
        else:
            node = None
        keys.append(part)
    return line, tuple(keys)
