"""The ``updates:`` section of the agent's config: where versions are kept, how hard a download
tries, and what a health window allows a new model before it is rolled back."""

from __future__ import annotations

from pydantic import Field

from edge_agent.config_types import FilePath, StrictConfig


class UpdatesConfig(StrictConfig):
    """How the agent installs model versions the cloud asks for, and when it rolls one back."""

    dir: FilePath | None = Field(
        default=None, description="where versions are kept; default: models/ beside the outbox"
    )
    health_window_s: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    max_errors: int = Field(
        default=0, ge=0, description="inference errors allowed in the health window"
    )
    max_latency_factor: float = Field(
        default=3.0, gt=1, allow_inf_nan=False,
        description="median inference time allowed, as a multiple of the previous model's",
    )  # fmt: skip
    latency_floor_ms: float = Field(
        default=1.0, ge=0, allow_inf_nan=False,
        description="a median inference time under this is never too slow (noise on fast models)",
    )  # fmt: skip
    keep_versions: int = Field(default=3, ge=2)
    download_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    retries: int = Field(default=5, ge=1, description="download attempts in all")
    retry_backoff_s: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="first wait; doubles per attempt"
    )
