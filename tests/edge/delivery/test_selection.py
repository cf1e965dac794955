"""Which events an action acts on: kinds, zones, lines, directions and one condition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.delivery.action_config import CommandActionConfig
from edge_agent.delivery.selection import Condition, EventSelector
from shared.messages import Event, ModelRef, new_event_id

REF = ModelRef(name="m", version="1", sha256="0" * 64)


def event(kind: str = "zone", state: str = "instant", **attributes: Any) -> Event:
    return Event(
        id=new_event_id(), pipeline="p", kind=kind, state=state, label="car", score=1.0,
        ts=datetime.now(UTC), seq=0, model=REF, attributes=attributes,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "attributes", "holds"),
    [
        ("occupancy >= 5", {"occupancy": 5}, True),
        ("occupancy >= 5", {"occupancy": 4}, False),
        ("occupancy>5", {"occupancy": 6}, True),
        ("rms_g < 0.5", {"rms_g": 0.49}, True),
        ("transition == enter", {"transition": "enter"}, True),
        ("transition != enter", {"transition": "exit"}, True),
        ("occupancy >= 5", {}, False),  # no such attribute
        ("occupancy >= 5", {"occupancy": "many"}, False),  # not a number
        ("flag == 1", {"flag": True}, False),  # a bool is not a number
    ],
)
def test_a_condition_compares_one_attribute(
    condition: str, attributes: dict[str, Any], holds: bool
) -> None:
    assert Condition.parse(condition).holds(event(**attributes)) is holds


@pytest.mark.parametrize(
    ("text", "message"),
    [("occupancy", "not a condition"), ("occupancy >= lots", "needs a number"), ("", "not a")],
)
def test_a_bad_condition_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Condition.parse(text)


def test_the_config_refuses_a_bad_condition_by_key() -> None:
    with pytest.raises(ValidationError, match="when"):
        CommandActionConfig.model_validate(
            {"type": "command", "argv": ["true"], "when": "occupancy => 5"}
        )


def test_every_criterion_must_hold() -> None:
    selector = EventSelector.of(on=["instant"], kinds=["zone"], zones=["A"], when="occupancy >= 3")
    assert selector.wants(event(zone="A", occupancy=3))
    assert not selector.wants(event(zone="B", occupancy=3))
    assert not selector.wants(event(zone="A", occupancy=2))
    assert not selector.wants(event(kind="object", zone="A", occupancy=3))
    assert not selector.wants(event(state="start", zone="A", occupancy=3))
    crossing = EventSelector.of(on=["instant"], lines=["stop"], directions=["left_to_right"])
    assert crossing.wants(event("line_crossing", line="stop", direction="left_to_right"))
    assert not crossing.wants(event("line_crossing", line="stop", direction="right_to_left"))
