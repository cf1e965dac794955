"""The pieces every part's config class is built from, in a leaf module.

Each part of the agent owns its config class (a source its source config, tracking its
zones and lines, delivery its outbox); ``edge_agent.config`` only assembles them. They all
derive from ``StrictConfig`` (or ``OnOffKeysConfig``), name files with ``FilePath`` and
URLs with ``MqttUrlText`` or ``HttpUrlText``, which live here because this module imports
nothing of the agent's, so any part can import it without a cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator

from shared.errors import ContractError
from shared.urls import parse_mqtt_url


class StrictConfig(BaseModel):
    """A config section: unknown keys are errors (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OnOffKeysConfig(StrictConfig):
    """A section with a key named ``on`` or ``off`` (a filter's levels, an action's states).

    YAML 1.1 (PyYAML) reads the keys ``on`` and ``off`` as the booleans True and False;
    they are named back before validation.
    """

    @model_validator(mode="before")
    @classmethod
    def _on_off_keys(cls, value: Any) -> Any:
        if isinstance(value, dict) and (True in value or False in value):
            names = {True: "on", False: "off"}
            return {names.get(k, k) if isinstance(k, bool) else k: v for k, v in value.items()}
        return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is None or value.is_absolute():
        return value
    return Path(os.path.normpath(Path(base) / value))


FilePath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path that, read from a file, is relative to that file's directory."""


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


MqttUrlText = Annotated[str, AfterValidator(_check_mqtt_url)]
"""A broker URL as written, checked by the one parser of ``shared.urls``."""

HttpUrlText = Annotated[str, AfterValidator(_check_http_url)]
"""An http(s):// URL with a host (and, if given, a valid port)."""
