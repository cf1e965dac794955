"""An ``EventBatch`` payload straight to its ``events`` rows, validated in Rust.

``EventBatch.model_validate_json`` runs four Python validators per event (the time's ISO
check and its 1970..9999 range, the label's NUL check, the attributes) and builds three model
instances per event: most of ingest's time. ``fast_event_batch`` validates the same payload
with a ``TypeAdapter`` of a TypedDict twin of the contract whose per-event rules are
pydantic-core's own (patterns, lengths, strict types, a union for attribute values), builds no
model, and returns plain dicts that become the rows.

The twin is only ever *stricter* than the contract, never looser: what it refuses (or a value
only the contract's slower checks can judge: a time in 1970 or 9999, an integer attribute
beyond 19 digits) goes through ``EventBatch`` itself, which accepts it or says why not in its
own words. So ingest accepts, refuses and explains exactly what the contract does;
``tests/cloud/ingest/test_batches.py`` checks the twin against the contract on generated and
damaged batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NotRequired

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    GetPydanticSchema,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import core_schema, to_json
from typing_extensions import TypedDict

from shared.fields import (
    INT64_MAX,
    INT64_MIN,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_TEXT,
    MAX_ATTRIBUTES,
    Count,
    EventId,
    FiniteFloat,
    Name,
    Score,
    Sha256,
    UtcDatetime,
)
from shared.messages import (
    MAX_EVENTS_PER_BATCH,
    AgentId,
    BatchId,
    EventState,
    SchemaVersion,
)

_NO_NUL = r"^[^\x00]*$"
"""``SafeText`` in Rust: JSON text reaches pydantic-core as UTF-8, so it holds no lone
surrogate (the JSON parser refuses one); only NUL is left to refuse."""

_YEAR_INSIDE = r"^(?:197[1-9]|19[89]\d|[2-8]\d{3}|9[0-8]\d{2}|99[0-8]\d|999[0-8])-"
"""``UtcDatetime``'s two Python checks in one pattern: ISO text (never a unix time), in a
year strictly between 1970 and 9999, which any UTC offset keeps in range. Years 1970 and
9999 need the contract's exact comparison: they take the model's path."""

_STRICT = ConfigDict(extra="forbid")


def _iso_time(_source: Any, handler: Any) -> core_schema.CoreSchema:
    pattern = core_schema.str_schema(pattern=_YEAR_INSIDE, strict=True)
    return core_schema.chain_schema([pattern, handler.generate_schema(AwareDatetime)])


_Time = Annotated[datetime, GetPydanticSchema(_iso_time)]
_Label = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128, pattern=_NO_NUL)]
_AttributeName = Annotated[
    str, Strict(), StringConstraints(max_length=MAX_ATTRIBUTE_NAME, pattern=_NO_NUL)
]
_AttributeText = Annotated[
    str, Strict(), StringConstraints(max_length=MAX_ATTRIBUTE_TEXT, pattern=_NO_NUL)
]
_AnyInt = Annotated[int, Strict()]
"""Unbounded here: a bounded int would let a strict float take a huge integer (as JSON has
one number type, a strict float accepts ``1``). ``_in_int64`` checks the bounds."""
_Attributes = Annotated[
    dict[_AttributeName, bool | _AnyInt | FiniteFloat | _AttributeText],
    Field(max_length=MAX_ATTRIBUTES),
]


class _Model(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: Name
    version: Name
    sha256: Sha256


class _Event(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: EventId
    pipeline: Name
    kind: Name
    state: EventState
    label: _Label
    score: Score
    ts: _Time
    seq: Count
    model: _Model
    attributes: NotRequired[_Attributes]


class _Batch(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    # The envelope is once per message: the contract's own types, Python validators and all.
    schema: NotRequired[SchemaVersion]
    agent_id: AgentId
    batch_id: NotRequired[BatchId | None]
    sent_at: UtcDatetime
    events: Annotated[list[_Event], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


_BATCH = TypeAdapter(_Batch)


class FastBatch(TypedDict):
    """A validated batch: the envelope's fields and its events as plain dicts."""

    agent_id: str
    batch_id: NotRequired[str | None]
    events: list[dict[str, Any]]


def fast_event_batch(payload: bytes | bytearray) -> FastBatch | None:
    """``payload`` validated as the contract's ``EventBatch`` would accept it, as dicts; None
    when the twin refuses it or cannot judge it (then ``EventBatch`` must)."""
    try:
        batch: Any = _BATCH.validate_json(payload)
    except ValidationError:
        return None
    for event in batch["events"]:
        attributes = event.get("attributes")
        if attributes and not _in_int64(attributes):
            return None
    fast: FastBatch = batch
    return fast


def _in_int64(attributes: dict[str, Any]) -> bool:
    return all(
        INT64_MIN <= value <= INT64_MAX for value in attributes.values() if value.__class__ is int
    )


def attributes_json(event: dict[str, Any]) -> str:
    """The ``attributes`` column's text of a validated event, as the contract's ``Event``
    would serialise its ``attributes`` (``{}`` when it has none)."""
    return to_json(event.get("attributes", {})).decode()
