"""What a training job asks for: the data (``Selector``), the bar its candidate must clear
(``Gate``) and the whole request (``JobSpec``); and the job states, written once.

Plain pydantic values that the REST route, the CLI and the worker share; the worker reads a
job's stored JSON back through them, so a job runs exactly what its creator was told.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.fields import AgentId, Label, UtcDatetime

JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "rejected", "cancelled")
LabelSource = Literal["edge", "cloud", "person"]
PRECEDENCE: tuple[LabelSource, ...] = ("person", "cloud", "edge")
"""When a sample has labels from several trusted sources, the first of these wins."""
SafeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MAX_AGENTS = 1000
MAX_SAMPLES = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Strict):
    """Which samples of the job's pipeline make its dataset, and whose labels are trusted."""

    agents: list[AgentId] | None = Field(
        default=None, max_length=MAX_AGENTS, description="these agents' samples; None: all"
    )
    since: UtcDatetime | None = Field(default=None, description="samples taken at or after")
    until: UtcDatetime | None = Field(default=None, description="samples taken before")
    label_sources: list[LabelSource] = Field(
        default=["person", "cloud"],
        min_length=1,
        description="labels from these sources are used (person over cloud over edge); a "
        "sample without one is left out",
    )
    labels: list[Label] | None = Field(
        default=None, max_length=1000, description="keep samples with these labels; None: all"
    )
    max_samples: int = Field(default=20_000, ge=1, le=MAX_SAMPLES)

    @model_validator(mode="after")
    def _ordered(self) -> Selector:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("selector.since must be before selector.until")
        return self


class Gate(_Strict):
    """What the candidate must show against the serving version to be registered.

    On the job's held-out split: the false-alarm rate strictly lower (if
    ``require_false_alarm_drop``) and recall lower by at most ``max_recall_drop``. On the
    shipped test set: recall lower by at most ``shipped_max_recall_drop`` and the false-alarm
    rate higher by at most ``shipped_max_false_alarm_rise``.
    """

    require_false_alarm_drop: bool = True
    max_recall_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    shipped_max_recall_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    shipped_max_false_alarm_rise: float = Field(default=0.02, ge=0.0, le=1.0)


class JobSpec(_Strict):
    """A training job as asked for (``POST /api/v1/training-jobs``, ``aiot cloud train``)."""

    pipeline: SafeName
    trainer: SafeName = Field(description="a trainer of cloud_api/training/trainers.py")
    base_model: SafeName = Field(description="the serving model's name")
    base_version: SafeName = Field(description="the serving version the candidate must beat")
    version: SafeName | None = Field(
        default=None, description="the candidate's version; default <base_version>-job<id>"
    )
    selector: Selector = Field(default_factory=Selector)
    options: dict[str, Any] = Field(
        default_factory=dict, description="the trainer's options (each trainer checks its own)"
    )
    gate: Gate = Field(default_factory=Gate)

    def version_of(self, job_id: int) -> str:
        """The candidate's version: the one asked for, or ``<base_version>-job<id>``."""
        return self.version or f"{self.base_version}-job{job_id}"
