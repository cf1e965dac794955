"""What a batch of messages holds for the runner: the escalations (a payload that is not one
is a dead letter; one that names another agent than its topic's is refused and
dead-lettered), and each escalation's input as its cloud model takes it, or why it cannot
be run (``RefusedError``). Pure: no SQL, no MQTT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from cloud_api.escalation.detector import CloudDetector, ImageInput
from cloud_api.escalation.model import CloudModel, decode_window
from cloud_api.ingest.parse import Inbound, dead_row, validation_reason
from shared.errors import ContractError
from shared.escalations import Escalation
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)

AnyModel = CloudModel | CloudDetector
"""A classifier answers windows; a detector (YOLOv8 output layout) answers images."""
ModelInput = npt.NDArray[np.float32] | ImageInput


class RefusedError(Exception):
    """Why an escalation is not run, and the kind of reason (for metrics)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(slots=True)
class Split:
    """A batch's messages sorted: escalations to answer, and dead letters."""

    escalations: list[Escalation] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    """``dead_letters`` rows."""
    refusals: dict[str, RefusedError] = field(default_factory=dict)
    """Escalations (by id) refused before their model is asked: dead-lettered, and answered."""


def split(batch: list[Inbound]) -> Split:
    """The batch's escalations, and the dead-letter rows of what is not one."""
    out = Split()
    for message in batch:
        parsed = parse(message)
        if isinstance(parsed, str):
            out.dead.append(dead_letter_row(message, parsed))
            continue
        escalation, refusal = parsed
        out.escalations.append(escalation)
        if refusal is not None:
            out.dead.append(dead_letter_row(message, str(refusal)))
            out.refusals[escalation.id] = refusal
    return out


def dead_letter_row(message: Inbound, reason: str) -> dict[str, Any]:
    """The ``dead_letters`` row of ``message`` (escalations are never retained)."""
    log.warning("dead-lettered an escalation on %s: %s", message.topic, reason)
    row = dead_row(message, reason)
    row.pop("retained")
    return row


def parse(message: Inbound) -> tuple[Escalation, RefusedError | None] | str:
    """The message as an escalation of its topic's agent (and a refusal when it names
    another agent: the answer goes to the agent that sent it), or why it is not one."""
    try:
        topic = Topic.parse(message.topic)
    except ContractError as exc:
        return str(exc)
    if topic.channel != Channel.ESCALATIONS:
        return f"the runner does not handle {topic.channel}"
    try:
        escalation = Escalation.model_validate_json(message.payload)
    except ValidationError as exc:
        return validation_reason(exc)
    if escalation.agent_id != topic.agent_id:
        reason = f"agent_id {escalation.agent_id!r} does not match topic {message.topic!r}"
        sent = escalation.model_copy(update={"agent_id": topic.agent_id})
        return sent, RefusedError("bad_input", reason)
    return escalation, None


def model_input(escalation: Escalation, model: AnyModel) -> ModelInput:
    """The escalation's input as the model takes it; RefusedError when it does not decode or fit."""
    if isinstance(model, CloudDetector):
        try:
            return model.prepare(escalation)
        except ContractError as exc:
            raise RefusedError("bad_input", str(exc)) from None
    if escalation.kind != "window":
        raise RefusedError(
            "bad_input", f"cloud model {model.name} takes windows, not {escalation.kind}s"
        )
    try:
        array = decode_window(escalation.input_bytes())
    except ContractError as exc:
        raise RefusedError("bad_input", str(exc)) from None
    if escalation.window is not None and list(array.shape) != list(escalation.window.shape):
        raise RefusedError(
            "bad_input",
            f"the input is {list(array.shape)}; the escalation declares {escalation.window.shape}",
        )
    if (reason := model.fits(array)) is not None:
        raise RefusedError("bad_input", reason)
    return array
