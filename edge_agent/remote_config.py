"""Remote configuration: the overlay the cloud publishes, retained, on the agent's ``config``.

An overlay changes, without a restart, what may change while pipelines run::

    {"log_level": "DEBUG",
     "pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.6},
                                           "debounce": {"n": 2, "m": 3}},
                               "summary_interval_s": 30,
                               "collect": {"random_share": 0.05, "max_per_minute": 10}}}}

``filters`` patches the parameters of the stages the pipeline's chain already has, by stage
type (a stage cannot be added or removed at run time); a section such as ``collect`` patches
the file's keys (``null`` turns it off). The keys a pipeline accepts are the
fields of ``RunSettings``: a section that becomes changeable at run time is one field there.
An overlay is the whole remote configuration: a key it leaves out takes the file's value.

The overlay is validated by the same classes as the file (``PipelineConfig`` and its filter
chain), so a value the file refuses is refused here with the same words. Keys that cannot
change at run time (sources, models, credentials, the broker) are refused by name. A refused
overlay changes nothing; the reason is in the status (``ConfigStatus``). The applied overlay
is written (atomically) beside the outbox, so a restart while the cloud is away runs it again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge_agent.config import AgentConfig
from edge_agent.pipelines.base import Pipeline, RunSettings
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.validation import first_error
from shared.messages import ConfigOverlay, ConfigStatus

log = logging.getLogger(__name__)

STATE_FILE = "remote_config.json"
PIPELINE_KEYS = tuple(f.name for f in fields(RunSettings))
"""What of a pipeline's section an overlay may change."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class RefusedError(Exception):
    """An overlay the agent does not apply; the message says which key and why."""


class RemoteConfig:
    """Validates overlays, hands them to the pipelines, persists and reports them."""

    def __init__(
        self,
        config: AgentConfig,
        pipelines: Sequence[Pipeline],
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._agent_id = config.agent_id
        self._configs = {p.name: p for p in config.pipelines}
        self._pipelines = {p.name: p for p in pipelines}
        self._path = config.outbox.path.parent / STATE_FILE
        self._on_change = on_change
        self._file_level = logging.getLogger().level
        self._lock = threading.Lock()
        self._status = ConfigStatus()
        self._applied_at: datetime | None = None
        """When the overlay in effect was issued: an older message arriving late is skipped."""

    @classmethod
    def restored(
        cls, config: AgentConfig, pipelines: Sequence[Pipeline], on_change: Callable[[], None]
    ) -> RemoteConfig:
        """One that runs the overlay the last run applied (``restore``) until the cloud's
        retained one arrives; made before the pipelines start."""
        remote = cls(config, pipelines, on_change=on_change)
        remote.restore()
        return remote

    def status(self) -> ConfigStatus:
        """What the agent reports in its status."""
        return self._status

    def restore(self) -> None:
        """Apply the overlay the last run applied (before the pipelines start)."""
        try:
            saved = ConfigOverlay.model_validate_json(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValidationError) as exc:
            log.error("ignoring the unreadable remote configuration %s: %s", self._path, exc)
            return
        self._take(saved, persist=False)

    def submit(self, payload: bytes) -> None:
        """A message from the ``config`` topic: apply it, or refuse it with the reason."""
        if not payload:
            log.info("the retained remote configuration was cleared; keeping the one in effect")
            return
        try:
            message = ConfigOverlay.model_validate_json(payload)
        except ValidationError as exc:
            self._refuse(None, f"invalid config message: {first_error(exc)}")
            return
        if message.agent_id != self._agent_id:
            self._refuse(
                message.version,
                f"config names agent {message.agent_id!r}, this is {self._agent_id!r}",
            )
            return
        status = self._status
        if message.version == status.applied_version or (
            message.version == status.desired_version and status.refused
        ):
            return  # the retained message again (a reconnect): decided already
        if self._superseded(message):
            log.info(
                "skipping remote configuration version %d: version %s, issued later, is in effect",
                message.version, status.applied_version,
            )  # fmt: skip
            return
        self._take(message, persist=True)

    def _superseded(self, message: ConfigOverlay) -> bool:
        """Whether ``message`` is older than the overlay in effect (a late redelivery): a lower
        version not issued after it. A lower version issued later (the cloud's database was
        rebuilt and counts again from 1) is taken."""
        applied, applied_at = self._status.applied_version, self._applied_at
        if applied is None or applied_at is None or message.version > applied:
            return False
        return message.issued_at <= applied_at

    def _take(self, message: ConfigOverlay, *, persist: bool) -> None:
        try:
            settings, level = resolve(message.overlay, self._configs, self._pipelines)
        except RefusedError as exc:
            self._refuse(message.version, str(exc))
            return
        with self._lock:
            if persist:
                try:
                    _write_atomically(self._path, message.model_dump_json(by_alias=True))
                except OSError as exc:
                    self._refuse(message.version, f"cannot persist the overlay: {exc.strerror}")
                    return
            for name, pipeline in self._pipelines.items():
                pipeline.reconfigure(settings[name])
            logging.getLogger().setLevel(level or self._file_level)
            self._status = ConfigStatus(
                desired_version=message.version,
                applied_version=message.version,
                applied=message.overlay,
            )
            self._applied_at = message.issued_at
        log.info("remote configuration version %d applied", message.version)
        self._on_change()

    def _refuse(self, version: int | None, reason: str) -> None:
        log.warning("refused remote configuration version %s: %s", version, reason)
        with self._lock:
            self._status = self._status.model_copy(
                update={"desired_version": version, "refused": reason[:512]}
            )
        self._on_change()


def resolve(
    overlay: Mapping[str, Any],
    configs: Mapping[str, PipelineConfig],
    pipelines: Mapping[str, Pipeline],
) -> tuple[dict[str, RunSettings], str | None]:
    """Every pipeline's settings under ``overlay``, and its log level; raises RefusedError."""
    _check_keys("", overlay, ("log_level", "pipelines"), AgentConfig.model_fields)
    level = overlay.get("log_level")
    if level is not None and level not in LOG_LEVELS:
        raise RefusedError(f"log_level: expected one of {', '.join(LOG_LEVELS)}")
    sections = overlay.get("pipelines", {})
    if not isinstance(sections, dict):
        raise RefusedError("pipelines: expected an object of pipeline name -> settings")
    unknown = sorted(set(sections) - set(pipelines))
    if unknown:
        raise RefusedError(f"pipelines: this agent has no pipeline {', '.join(map(repr, unknown))}")
    settings = {}
    for name, pipeline in pipelines.items():
        section = sections.get(name, {})
        if not isinstance(section, dict):
            raise RefusedError(f"pipelines.{name}: expected an object")
        settings[name] = _pipeline_settings(name, section, configs[name], pipeline.configured)
    return settings, level


def _check_keys(where: str, section: Mapping[str, Any], allowed: Sequence[str],
                known: Mapping[str, Any]) -> None:  # fmt: skip
    for key in section:
        if key in allowed:
            continue
        if key in known:
            raise RefusedError(f"{where}{key} cannot change at run time (edit the file, restart)")
        raise RefusedError(f"{where}{key}: unknown key")


def _pipeline_settings(
    name: str, section: Mapping[str, Any], config: PipelineConfig, configured: RunSettings
) -> RunSettings:
    where = f"pipelines.{name}."
    _check_keys(where, section, PIPELINE_KEYS, PipelineConfig.model_fields)
    data: dict[str, Any] = {key: getattr(config, key) for key in PipelineConfig.model_fields}
    data.update({key: getattr(configured, key) for key in PIPELINE_KEYS})
    for key, value in section.items():
        current = data[key]
        if isinstance(value, dict) and isinstance(current, BaseModel):
            value = {**current.model_dump(), **value}  # a section's keys patch the file's
        data[key] = value
    data["filters"] = _patched_filters(where, section.get("filters", {}), configured)
    try:
        checked = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise RefusedError(f"{where}{first_error(exc)}") from None
    values = {key: getattr(checked, key) for key in PIPELINE_KEYS}
    values["filters"] = tuple(values["filters"])
    return RunSettings(**values)


def _patched_filters(where: str, patch: Any, configured: RunSettings) -> list[Any]:
    """The configured chain with the parameters ``patch`` gives per stage type."""
    if not isinstance(patch, dict):
        raise RefusedError(f"{where}filters: expected an object of stage type -> parameters")
    types = [stage.type for stage in configured.filters]
    for kind, params in patch.items():
        if kind not in types:
            have = ", ".join(types) or "none"
            raise RefusedError(
                f"{where}filters.{kind}: the chain has no such stage (it has {have}); "
                "stages cannot be added at run time"
            )
        if not isinstance(params, dict) or "type" in params:
            raise RefusedError(f"{where}filters.{kind}: expected an object of its parameters")
    return [
        {**stage.model_dump(), **patch[stage.type]} if stage.type in patch else stage
        for stage in configured.filters
    ]


def _write_atomically(path: Path, text: str) -> None:
    """A crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)
