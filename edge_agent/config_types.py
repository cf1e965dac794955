"""The two pieces every part's config class is built from, in a leaf module.

Each part of the agent owns its config class (a source its source config, tracking its
zones and lines, delivery its outbox); ``edge_agent.config`` only assembles them. They all
derive from ``StrictConfig`` and name files with ``FilePath``, which live here because this
module imports nothing of the agent's, so any part can import it without a cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class StrictConfig(BaseModel):
    """A config section: unknown keys are errors (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is None or value.is_absolute():
        return value
    return Path(os.path.normpath(Path(base) / value))


FilePath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path that, read from a file, is relative to that file's directory."""
