"""Messages -> rows, or a dead letter with its reason. Pure: no SQL, no MQTT.

A message from the broker becomes the rows of one transaction (events, a pipeline summary,
an agent's status) and the ``stored`` ack its batch earns; or, if it is too large, on a topic
ingest does not read, invalid, or from an agent other than its topic's, a dead letter with
the reason. A dead letter whose payload names a batch on an agent's ``events`` or ``summary``
topic earns a ``rejected`` ack, so the agent stops sending it again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError
from pydantic_core import to_json

from cloud_api.ingest.batches import attributes_json, fast_event_batch
from shared.digests import sha256_bytes
from shared.errors import ContractError
from shared.messages import AgentStatus, BatchAck, Event, EventBatch, PipelineSummary
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)

_Uplink = TypeVar("_Uplink", EventBatch, PipelineSummary, AgentStatus)
"""What agents send that ingest stores: each names its agent, which must be the topic's."""

PAYLOAD_KEEP_BYTES = 64 * 1024
REASON_MAX_CHARS = 4000
TOPIC_MAX_CHARS = 512
MAX_ERRORS_IN_REASON = 5
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""A larger message is a dead letter before it is parsed. The largest batch an agent sends
(1000 events of the default outbox) is well under 1 MiB; the contract's theoretical maximum
(every field at its bound) is ~63 MB and no agent sends it. Brokers should cap messages too
(Mosquitto's ``message_size_limit``)."""

_BATCH_ID = re.compile(rb'"batch_id"\s*:\s*"([0-9a-f-]{36})"')

RetainedKey = tuple[str, str]
"""(topic, payload sha256) of a retained message: the broker replays it at every subscribe."""


class Inbound(NamedTuple):
    """A message as the broker delivered it."""

    topic: str
    payload: bytes | bytearray
    mid: int
    qos: int
    retain: bool
    received_at: float
    connection: int  # which broker connection delivered it: a mid is only valid on that one


class EventValues(NamedTuple):
    """The ``events`` row of one event, in the column order both writers insert it: built
    once per event, as a tuple, with ``attributes`` already the JSON text the column stores."""

    id: str
    agent_id: str
    pipeline: str
    kind: str
    state: str
    label: str
    score: float
    ts: datetime
    seq: int
    model_name: str
    model_version: str
    model_sha256: str
    attributes: str
    received_at: datetime


EVENT_COLUMNS = EventValues._fields
"""The ``events`` columns ingest writes, in ``EventValues`` order."""


@dataclass(slots=True)
class Work:
    """A batch after validation, ready for one transaction, and the acks it earns."""

    events: list[EventValues] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[tuple[AgentStatus, datetime | None]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    acks: list[tuple[str, BatchAck]] = field(default_factory=list)
    """(agent id, ack) to publish once the transaction has committed."""
    retained_dead: list[RetainedKey] = field(default_factory=list)
    """Retained dead letters of this batch, remembered once committed."""
    prepared: object = None
    """What the writer computes ahead of its transaction (``Writer.prepare``), if it did."""


def parse(batch: Iterable[Inbound], *, kept: Container[RetainedKey]) -> Work:
    """The rows and acks of ``batch``; ``kept``: retained dead letters stored already."""
    work = Work()
    for message in batch:
        try:
            reason = _add_rows(message, work)
        except Exception as exc:  # a message we cannot even turn into rows
            log.exception("ingest failed on a message on %s", message.topic)
            reason = f"ingest could not read it: {first_line(exc)}"
        if reason is not None:
            dead_letter(work, message, reason, kept=kept)
    return work


def _add_rows(message: Inbound, work: Work) -> str | None:
    """Add ``message``'s rows and ack to ``work``; or the reason it is a dead letter."""
    if len(message.payload) > MAX_PAYLOAD_BYTES:
        return f"payload of {len(message.payload)} bytes is over {MAX_PAYLOAD_BYTES}"
    try:
        topic = Topic.parse(message.topic)
    except ContractError as exc:
        return str(exc)
    if topic.channel is Channel.EVENTS:
        return _add_events(message, topic, work)
    if topic.channel is Channel.SUMMARY:
        summary = _validated(message, topic, PipelineSummary)
        if isinstance(summary, str):
            return summary
        work.summaries.append(summary_row(summary, message.received_at))
        if summary.batch_id is not None:
            ack = BatchAck(batch_id=summary.batch_id, outcome="stored")
            work.acks.append((summary.agent_id, ack))
    elif topic.channel is Channel.STATUS:
        if not message.payload:  # an operator cleared the retained status
            return None
        status = _validated(message, topic, AgentStatus)
        if isinstance(status, str):
            return status
        work.statuses.append((status, seen_at(status, message)))
    else:
        return f"ingest does not handle {topic.channel}"
    return None


def _add_events(message: Inbound, topic: Topic, work: Work) -> str | None:
    """Add an ``EventBatch``'s rows and ack to ``work``; or the reason it is a dead letter.

    The Rust twin of the contract (``batches.py``) takes the usual batch; what it refuses or
    cannot judge is validated by ``EventBatch`` itself, which gives the reason.
    """
    received_at = datetime.fromtimestamp(message.received_at, UTC)
    fast = fast_event_batch(message.payload)
    if fast is None:
        parsed = _validated(message, topic, EventBatch)
        if isinstance(parsed, str):
            return parsed
        agent_id, batch_id = parsed.agent_id, parsed.batch_id
        rows = [event_row(agent_id, event, received_at) for event in parsed.events]
    else:
        agent_id, batch_id = fast["agent_id"], fast.get("batch_id")
        if agent_id != topic.agent_id:
            return _mismatch(agent_id, message)
        rows = [fast_event_row(agent_id, event, received_at) for event in fast["events"]]
    work.events.extend(rows)  # all or nothing: a message is stored whole or dead-lettered
    if batch_id is not None:
        work.acks.append((agent_id, BatchAck(batch_id=batch_id, outcome="stored")))
    return None


def _validated(message: Inbound, topic: Topic, kind: type[_Uplink]) -> _Uplink | str:
    """The payload as ``kind`` if it validates and names the topic's agent; otherwise why not."""
    try:
        parsed = kind.model_validate_json(message.payload)
    except ValidationError as exc:
        return validation_reason(exc)
    if parsed.agent_id != topic.agent_id:
        return _mismatch(parsed.agent_id, message)
    return parsed


def _mismatch(agent_id: str, message: Inbound) -> str:
    return f"agent_id {agent_id!r} does not match topic {message.topic!r}"


def dead_letter(work: Work, message: Inbound, reason: str, *, kept: Container[RetainedKey]) -> None:
    """Make ``message`` a dead letter of ``work``; if its agent can be told (a batch id
    on an agent's events or summary topic), reject the batch so it stops resending it.

    A retained message already kept as a dead letter (in ``kept``: the broker replays it at
    every subscribe) is not kept again.
    """
    reason = storable(reason)  # it may quote the payload: NUL, lone surrogates...
    if message.retain:
        key = (message.topic, sha256_bytes(message.payload))
        if key in kept:
            return
        work.retained_dead.append(key)
    work.dead.append(dead_row(message, reason))
    match = _BATCH_ID.search(message.payload[:PAYLOAD_KEEP_BYTES])
    if match is None:
        return
    try:
        topic = Topic.parse(message.topic)
    except ContractError:
        return
    if topic.channel in (Channel.EVENTS, Channel.SUMMARY):
        ack = BatchAck(batch_id=match.group(1).decode(), outcome="rejected", reason=reason[:512])
        work.acks.append((topic.agent_id, ack))


def seen_at(status: AgentStatus, message: Inbound) -> datetime | None:
    """When the agent was last known online.

    A live heartbeat proves the agent is up now, whatever its clock says; a retained one
    (replayed by the broker when we subscribe) is only as fresh as its own timestamp, and
    never fresher than its arrival (a clock set to 9999 must not keep it online forever).
    """
    if status.state != "online":
        return None
    received = datetime.fromtimestamp(message.received_at, UTC)
    if message.retain:
        return min(status.ts, received)
    return received


def dead_row(message: Inbound, reason: str) -> dict[str, Any]:
    """The ``dead_letters`` row of ``message``, and whether it was retained."""
    payload = message.payload[:PAYLOAD_KEEP_BYTES].decode("utf-8", errors="replace")
    return {
        "topic": storable(message.topic[:TOPIC_MAX_CHARS]),
        # PostgreSQL text cannot hold NUL: a dead letter must always be storable.
        "payload": payload.replace("\x00", "\ufffd"),
        "payload_size": len(message.payload),
        "reason": storable(reason[:REASON_MAX_CHARS]),
        "received_at": datetime.fromtimestamp(message.received_at, UTC),
        "retained": message.retain,
    }


def event_row(agent_id: str, event: Event, received_at: datetime) -> EventValues:
    """The ``events`` row of one event of ``agent_id``'s batch."""
    model = event.model
    return EventValues(
        event.id, agent_id, event.pipeline, event.kind, event.state, event.label, event.score,
        event.ts, event.seq, model.name, model.version, model.sha256,
        to_json(event.attributes).decode(), received_at,
    )  # fmt: skip


def fast_event_row(agent_id: str, e: dict[str, Any], received_at: datetime) -> EventValues:
    """``event_row`` of an event validated by the twin (``batches.fast_event_batch``)."""
    m = e["model"]
    return EventValues(
        e["id"], agent_id, e["pipeline"], e["kind"], e["state"], e["label"], e["score"],
        e["ts"], e["seq"], m["name"], m["version"], m["sha256"], attributes_json(e),
        received_at,
    )  # fmt: skip


def summary_row(summary: PipelineSummary, received_at: float) -> dict[str, Any]:
    """The ``summaries`` row of one pipeline summary."""
    return {
        "agent_id": summary.agent_id,
        "pipeline": summary.pipeline,
        "window_start": summary.window_start,
        "window_end": summary.window_end,
        "samples_in": summary.samples_in,
        "inferences": summary.inferences,
        "gated": summary.gated,
        "events": sum(summary.events_by_label.values()),
        "events_by_label": summary.events_by_label,
        "signals": {name: stats.model_dump() for name, stats in summary.signals.items()},
        "raw_bytes": summary.raw_bytes,
        "sent_bytes": summary.sent_bytes,
        "model_name": summary.model.name,
        "model_version": summary.model.version,
        "model_sha256": summary.model.sha256,
        "received_at": datetime.fromtimestamp(received_at, UTC),
    }


def validation_reason(exc: ValidationError) -> str:
    """pydantic's error text, compact: the first few errors with their location."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}"
        for error in errors[:MAX_ERRORS_IN_REASON]
    ]
    more = len(errors) - MAX_ERRORS_IN_REASON
    suffix = f"; and {more} more" if more > 0 else ""
    return f"{len(errors)} validation error(s) for {exc.title}: " + "; ".join(parts) + suffix


def storable(text: str) -> str:
    """``text`` as every database and the wire accept it: NUL becomes U+FFFD and an unpaired
    surrogate (which PostgreSQL's UTF-8 and the contract refuse) becomes ``?``."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def first_line(exc: BaseException) -> str:
    """The database's (or the exception's) own first line of explanation."""
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:REASON_MAX_CHARS]
