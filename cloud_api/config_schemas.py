"""REST shapes of agents' remote configurations (``/api/v1/agents/{id}/config``,
``/api/v1/agent-configs``).

Kept apart from ``schemas.py`` (the rest of the REST classes), which would pass 500 lines
with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_api.deployment_schemas import DeploymentTarget
from cloud_api.queries.agent_config import ConfigState
from shared.fields import OverlayJson

OVERLAY_DOC = (
    "the whole remote configuration (a key left out takes the agent's file value again): "
    '{"log_level": "INFO", "pipelines": {"<name>": {"filters": {"threshold": {"threshold": '
    '0.7}, "debounce": {"n": 2, "m": 3}}, "summary_interval_s": 30}}}; the agent validates it '
    "against its own configuration and reports it applied or refused with the reason"
)


class AgentConfigIn(BaseModel):
    """``PUT /api/v1/agents/{id}/config``: one agent's overlay."""

    model_config = ConfigDict(extra="forbid")

    overlay: OverlayJson = Field(description=OVERLAY_DOC)


class FleetConfigIn(BaseModel):
    """``PUT /api/v1/agent-configs``: one overlay for the agents of a target (ids or labels)."""

    model_config = ConfigDict(extra="forbid")

    target: DeploymentTarget
    overlay: OverlayJson = Field(description=OVERLAY_DOC)


class DesiredConfigOut(BaseModel):
    """The overlay an operator set, as the broker holds it retained."""

    version: int
    overlay: dict[str, Any]
    updated_at: datetime


class ReportedConfigOut(BaseModel):
    """What the agent last said in its status."""

    desired_version: int | None = Field(description="the last version it received")
    applied_version: int | None = Field(description="the version in effect (null: its file)")
    applied: dict[str, Any] = Field(description="the overlay in effect")
    refused: str = Field(description="why desired_version was refused; empty when applied")


class AgentConfigOut(BaseModel):
    """An agent's remote configuration: desired, reported, and whether they agree."""

    agent_id: str
    state: ConfigState
    desired: DesiredConfigOut | None
    reported: ReportedConfigOut | None


class AgentConfigPage(BaseModel):
    """A page of agents' configurations by agent id; pass ``next_cursor`` back as ``cursor``."""

    items: list[AgentConfigOut]
    next_cursor: str | None = Field(description="null on the last page")
