"""The config of local actions: one class per action ``type``, joined in ``ActionConfig``.

``edge_agent.delivery.actions.ACTIONS`` has one action per type of this union.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from edge_agent.broker import BrokerConfig
from edge_agent.config_types import HttpUrlText, OnOffKeysConfig
from edge_agent.delivery.selection import EventSelector, check_condition
from shared.messages import EventState


class _ActionConfig(OnOffKeysConfig):
    """Which events an action acts on (every criterion left out means any); see
    ``edge_agent.delivery.selection``."""

    on: list[EventState] = Field(default=["start"], min_length=1)
    labels: list[str] | None = Field(default=None, description="only these labels; all if unset")
    kinds: list[str] | None = Field(default=None, description="anomaly, object, zone, ...")
    zones: list[str] | None = Field(default=None, description="zone events of these zones")
    lines: list[str] | None = Field(default=None, description="crossings of these lines")
    directions: list[Literal["left_to_right", "right_to_left"]] | None = None
    when: Annotated[str, AfterValidator(check_condition)] | None = Field(
        default=None, description="an attribute condition, like 'occupancy >= 5'"
    )
    timeout_s: float = Field(default=2.0, gt=0, le=60)

    def selector(self) -> EventSelector:
        return EventSelector.of(
            on=self.on, labels=self.labels, kinds=self.kinds, zones=self.zones,
            lines=self.lines, directions=self.directions, when=self.when,
        )  # fmt: skip


class MqttActionConfig(_ActionConfig, BrokerConfig):
    """Publish the event as small JSON to a topic on a local broker (not the uplink's); its
    URL, ``tls:`` and credentials are those of ``edge_agent.broker``."""

    type: Literal["mqtt"]
    topic: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^#+\x00]+$")]
    qos: Literal[0, 1] = 1
    retain: bool = False


class WebhookActionConfig(_ActionConfig):
    """POST the event as JSON to a URL (one retry on a connection error or a 5xx)."""

    type: Literal["webhook"]
    url: HttpUrlText
    headers: dict[str, str] = Field(default_factory=dict)


class CommandActionConfig(_ActionConfig):
    """Run ``argv`` (never through a shell) with the event in AIOT_EVENT_* variables."""

    type: Literal["command"]
    argv: list[str] = Field(min_length=1)


ActionConfig = Annotated[
    MqttActionConfig | WebhookActionConfig | CommandActionConfig, Field(discriminator="type")
]
"""Every local action; the registry in ``edge_agent.delivery.actions`` has one per type."""
