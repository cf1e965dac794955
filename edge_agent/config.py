"""The agent's whole configuration: one pydantic tree, loaded from one YAML file.

Every model forbids unknown keys, so a typo is an error and never a silently ignored
setting. ``load_config`` reports errors with the key path, the file and the line of the
offending key. Relative paths in the file are resolved against the file's directory, so
the agent behaves the same whatever its working directory (systemd, containers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.motion import MotionGateConfig
from edge_agent.sources.camera import (
    ImageFolderSourceConfig,
    OpenCvSourceConfig,
    SyntheticSceneSourceConfig,
)
from edge_agent.sources.simulated_machine import FAULTS
from edge_agent.tracking import TrackingConfig
from edge_agent.updates.config import UpdatesConfig
from shared.errors import ConfigError, ContractError
from shared.fields import MAX_HEARTBEAT_S
from shared.messages import MAX_EVENTS_PER_BATCH, AgentId, Name
from shared.urls import MqttUrl, parse_mqtt_url

MIN_SUMMARY_INTERVAL_S = 0.1
"""Summaries are cheap, but one per sample would be raw data again."""


def _protocol_as_str(value: Any) -> Any:
    # YAML reads `protocol: 5` as an int; both spellings mean the same thing.
    return str(value) if isinstance(value, int | float) else value


class MqttConfig(StrictConfig):
    """How to reach the broker."""

    url: str = "mqtt://127.0.0.1:1883"
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_as_str)] = "5"
    keepalive: int = Field(default=30, ge=5, le=65535)
    client_id: str | None = None
    heartbeat_s: float = Field(default=10.0, gt=0, le=MAX_HEARTBEAT_S)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _check_mqtt_url(value)

    @property
    def broker(self) -> MqttUrl:
        """The URL parsed (host, port, TLS, credentials)."""
        return parse_mqtt_url(self.url)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def username(self) -> str | None:
        return self.broker.username

    @property
    def password(self) -> str | None:
        return self.broker.password


class OutboxConfig(StrictConfig):
    """The durable queue between pipelines and the broker; bounded, oldest low-priority first."""

    path: FilePath = Path("outbox.db")
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    sync: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: survives a crash or kill -9; full: also a power cut (fsync per put)",
    )
    batch_max_events: int = Field(default=100, ge=1, le=MAX_EVENTS_PER_BATCH)
    max_inflight_batches: int = Field(
        default=10, ge=1, le=1000, description="batches published and not yet PUBACKed"
    )
    max_unacked_batches: int = Field(
        # More than ingest takes in one transaction (200 messages), so that the agent keeps
        # sending while the cloud commits: with 50 one agent drained at 0.78 of the rate.
        default=256,
        ge=1,
        le=10_000,
        description="batches published and not yet acknowledged by the cloud (on acks)",
    )
    ack_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a batch the cloud has not acknowledged in this time is sent again",
    )


class MetricsConfig(StrictConfig):
    """The Prometheus exporter; port 0 turns it off."""

    port: int = Field(default=0, ge=0, le=65535)
    host: str = "127.0.0.1"


class FaultWindow(StrictConfig):
    """A fault the simulated machine shows, in simulated seconds from the source's start."""

    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    fault: str
    severity: float = Field(default=1.0, gt=0, le=1)

    @field_validator("fault")
    @classmethod
    def _known_fault(cls, value: str) -> str:
        if value not in FAULTS:
            raise ValueError(f"expected one of {', '.join(FAULTS)}")
        return value


class SimulatedVibrationSourceConfig(StrictConfig):
    """An accelerometer on a simulated rotating machine, with a scripted fault schedule."""

    type: Literal["simulated_vibration"]
    seed: int = 0
    sample_rate_hz: float = Field(default=12800.0, gt=0)
    window: int = Field(default=2048, ge=16)
    shaft_hz: float = Field(default=29.5, gt=0)
    speed: float = Field(default=1.0, ge=0, description="1.0 = real time, 0 = as fast as possible")
    schedule: list[FaultWindow] = Field(default_factory=list)
    duration_s: float | None = Field(default=None, gt=0)


SourceConfig = Annotated[
    SimulatedVibrationSourceConfig
    | OpenCvSourceConfig
    | ImageFolderSourceConfig
    | SyntheticSceneSourceConfig,
    Field(discriminator="type"),
]
"""Every source type; new ones join this union and the registry in ``edge_agent.sources``."""

CAMERA_SOURCE_TYPES = frozenset({"opencv", "image_folder", "synthetic_scene"})
"""Sources that yield frames: their pipelines run a detector, a tracker and a motion gate."""


class VisionConfig(StrictConfig):
    """What a camera pipeline does between the frame and the events."""

    motion: MotionGateConfig = Field(default_factory=MotionGateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    score_threshold: float = Field(default=0.5, gt=0, lt=1)
    iou_threshold: float = Field(default=0.45, gt=0, lt=1)
    thumbnails: FilePath | None = Field(
        default=None, description="directory for the best crop of every object; none = off"
    )


ModelTask = Literal["anomaly", "detection"]
"""How a pipeline reads a model's output: ``anomaly``, class probabilities of a sensor window
with one normal label; ``detection``, boxes in the YOLOv8/v11 layout ``[1, 4 + C, N]``."""


class ModelConfig(StrictConfig):
    """Which ONNX model a pipeline runs: a file with its labels, or an entry of a manifest."""

    name: Name
    path: FilePath | None = None
    version: Name | None = None
    task: ModelTask = "anomaly"
    labels: list[str] | None = None
    labels_file: FilePath | None = None
    normal_label: str | None = None
    manifest: FilePath | None = None

    @model_validator(mode="after")
    def _one_source_of_truth(self) -> ModelConfig:
        if (self.path is None) == (self.manifest is None):
            raise ValueError("give either `path` (with version and labels) or `manifest`")
        if self.path is not None:
            if self.version is None:
                raise ValueError("with `path`, also give version")
            if (self.labels is None) == (self.labels_file is None):
                raise ValueError("with `path`, give either labels or labels_file")
            if self.task == "anomaly":
                if self.normal_label is None:
                    raise ValueError("an anomaly model needs normal_label")
                if self.labels is not None and self.normal_label not in self.labels:
                    raise ValueError(f"normal_label {self.normal_label!r} is not one of the labels")
            elif self.normal_label is not None:
                raise ValueError("a detection model has no normal_label")
        elif any(v is not None for v in (self.labels, self.labels_file, self.normal_label)):
            raise ValueError("with `manifest`, labels come from the manifest: remove them")
        return self


class RuntimeConfig(StrictConfig):
    """ONNX Runtime threads: small gateways run several pipelines on few cores."""

    intra_op_threads: int = Field(default=1, ge=0)
    inter_op_threads: int = Field(default=1, ge=0)


def _yaml_on_off_keys(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads the keys `on` and `off` as the booleans True and False.
    if isinstance(value, dict) and (True in value or False in value):
        names = {True: "on", False: "off"}
        return {names.get(k, k) if isinstance(k, bool) else k: v for k, v in value.items()}
    return value


class _Stage(StrictConfig):
    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return _yaml_on_off_keys(value)


Level = Annotated[float, Field(allow_inf_nan=False)]


class ThresholdFilterConfig(_Stage):
    """The signal is on at or above ``threshold`` (for anomaly models: 1 - p(normal))."""

    type: Literal["threshold"]
    threshold: Level


class HysteresisFilterConfig(_Stage):
    """The signal turns on at or above ``on`` and off only below ``off``."""

    type: Literal["hysteresis"]
    on: Level
    off: Level

    @model_validator(mode="after")
    def _ordered(self) -> HysteresisFilterConfig:
        if not self.off < self.on:
            raise ValueError(f"need off < on, got on={self.on}, off={self.off}")
        return self


class DebounceFilterConfig(_Stage):
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


class DeadbandFilterConfig(_Stage):
    """A value report (update, instant) passes only if it moved >= ``delta`` since the last."""

    type: Literal["deadband"]
    delta: float = Field(gt=0, allow_inf_nan=False)


class ReportIntervalFilterConfig(_Stage):
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


class RateLimitFilterConfig(_Stage):
    """A token bucket on emitted events: ``burst`` at once, ``per_s`` sustained."""

    type: Literal["rate_limit"]
    per_s: float = Field(gt=0, allow_inf_nan=False)
    burst: int = Field(default=1, ge=1)


class DedupFilterConfig(_Stage):
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
"""Every filter stage; the engine's registry in ``edge_agent.filters`` has one per type."""

LEVEL_STAGES = ("threshold", "hysteresis")


def _default_filters() -> list[FilterStageConfig]:
    return [
        ThresholdFilterConfig(type="threshold", threshold=0.8),
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


def _check_mqtt_url(value: str) -> str:
    try:
        parse_mqtt_url(value)
    except ContractError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http(s)://host[:port]/path")
    _ = parts.port
    return value


EventStateName = Literal["start", "update", "end", "instant"]


class _Action(StrictConfig):
    on: list[EventStateName] = Field(default=["start"], min_length=1)
    labels: list[str] | None = Field(default=None, description="only these labels; all if unset")
    timeout_s: float = Field(default=2.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, value: Any) -> Any:
        return _yaml_on_off_keys(value)


class MqttActionConfig(_Action):
    """Publish the event as small JSON to a topic on a local broker (not the uplink's)."""

    type: Literal["mqtt"]
    url: Annotated[str, AfterValidator(_check_mqtt_url)] = "mqtt://127.0.0.1:1883"
    topic: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^#+\x00]+$")]
    qos: Literal[0, 1] = 1
    retain: bool = False


class WebhookActionConfig(_Action):
    """POST the event as JSON to a URL (one retry on a connection error or a 5xx)."""

    type: Literal["webhook"]
    url: Annotated[str, AfterValidator(_check_http_url)]
    headers: dict[str, str] = Field(default_factory=dict)


class CommandActionConfig(_Action):
    """Run ``argv`` (never through a shell) with the event in AIOT_EVENT_* variables."""

    type: Literal["command"]
    argv: list[str] = Field(min_length=1)


ActionConfig = Annotated[
    MqttActionConfig | WebhookActionConfig | CommandActionConfig, Field(discriminator="type")
]
"""Every local action; the registry in ``edge_agent.actions`` has one per type."""


class PipelineConfig(StrictConfig):
    """Source -> model -> filters -> events (to the outbox and local actions)."""

    name: Name
    source: SourceConfig
    model: ModelConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    filters: FilterChainConfig = Field(default_factory=_default_filters)
    vision: VisionConfig | None = Field(
        default=None, description="camera pipelines only; defaults apply when left out"
    )
    actions: list[ActionConfig] = Field(default_factory=list)
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

    @property
    def is_camera(self) -> bool:
        return self.source.type in CAMERA_SOURCE_TYPES

    @field_validator("summary_interval_s")
    @classmethod
    def _summary_not_a_flood(cls, value: float) -> float:
        if 0 < value < MIN_SUMMARY_INTERVAL_S:
            raise ValueError(f"expected 0 (off) or at least {MIN_SUMMARY_INTERVAL_S} s")
        return value


class CloudConfig(StrictConfig):
    """The cloud API the agent downloads model versions from, and the key that signs them.

    Without this section the agent does not subscribe to desired states: it runs the models
    of this file only.
    """

    api_url: Annotated[str, AfterValidator(_check_http_url)]
    public_key: str | None = Field(
        default=None, description="base64 of the cloud's Ed25519 public key (32 raw bytes)"
    )
    public_key_file: FilePath | None = None
    username: str | None = Field(default=None, description="HTTP Basic user for downloads")
    password_file: FilePath | None = None

    @model_validator(mode="after")
    def _one_key_and_credentials(self) -> CloudConfig:
        if self.public_key is not None and self.public_key_file is not None:
            raise ValueError("give public_key or public_key_file, not both")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("give username and password_file together")
        return self

    @property
    def base_url(self) -> str:
        """``api_url`` without a trailing slash (artifact paths start with one)."""
        return self.api_url.rstrip("/")


class AgentConfig(StrictConfig):
    """The whole agent."""

    agent_id: AgentId
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cloud: CloudConfig | None = None
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)
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
        where = _dotted(keys) or "(top level)"
        given = ""
        if error["type"] not in ("missing", "extra_forbidden") and not isinstance(
            error.get("input"), dict | list
        ):
            given = f" (got {error.get('input')!r})"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"  {path.name}:{line}: {where}: {message}{given}")
    return "\n".join(lines)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


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
