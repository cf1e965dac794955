"""Opaque keyset cursors: where the previous page ended, as short base64 of a JSON object.

A client passes ``next_cursor`` back unchanged. The server reads it as untrusted input: the
text is bounded (``MAX_CURSOR`` characters of the base64url alphabet, a 422 otherwise) and
its JSON must be exactly one of the position models below (a 400 otherwise), so no cursor
can reach a query with a value the database would refuse, or nest deep enough to hurt.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_api.params import INT64_MAX, Instant
from shared.fields import AgentId, EventId

MAX_CURSOR = 512
"""Characters of a cursor: ours are under 150, and no JSON this short nests deeply."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"

CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR,
        pattern=CURSOR_PATTERN,
        description="the previous page's next_cursor, unchanged (opaque); omit for the first page",
    ),
]


class _Position(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventPosition(_Position):
    """The (ts, id) of the last event on a page of events, newest first."""

    ts: Instant
    id: EventId

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        # Cursors before this model were a JSON pair [ts, id]: a page being walked while the
        # API is upgraded goes on.
        if isinstance(data, list) and len(data) == 2:
            return {"ts": data[0], "id": data[1]}
        return data


class AgentPosition(_Position):
    """The id of the last agent on a page of agents, by id."""

    id: AgentId


class DeadLetterPosition(_Position):
    """The id of the last dead letter on a page, newest (highest id) first."""

    id: int = Field(ge=1, le=INT64_MAX, strict=True)


PositionT = TypeVar("PositionT", bound=_Position)


def encode_cursor(position: _Position) -> str:
    """A cursor for ``position``: unpadded base64url of its JSON."""
    return base64.urlsafe_b64encode(position.model_dump_json().encode()).decode().rstrip("=")


RowT = TypeVar("RowT")


def keyset_page(
    rows: Sequence[RowT], limit: int, position: Callable[[RowT], _Position]
) -> tuple[Sequence[RowT], str | None]:
    """A page of ``rows`` (read with ``limit + 1``) and the cursor after it, None when the
    extra row shows there is no next page."""
    page = rows[:limit]
    return page, encode_cursor(position(page[-1])) if len(rows) > limit else None


def decode_cursor(cursor: str, model: type[PositionT]) -> PositionT:
    """The ``model`` inside ``cursor``; ValueError naming the parameter if it is not one.

    pydantic parses the JSON itself: it refuses anything but the model's one object shape.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return model.model_validate_json(raw)
    except ValueError:  # binascii.Error and ValidationError both are
        raise ValueError(
            f"cursor {cursor[:40]!r} is not a cursor this API gave: pass next_cursor back unchanged"
        ) from None


def cursor_param(model: type[PositionT]) -> Callable[..., PositionT | None]:
    """A dependency reading ``?cursor=`` as a ``model``; 400 naming ``cursor`` if it is not."""

    def read(cursor: CursorQuery = None) -> PositionT | None:
        if cursor is None:
            return None
        try:
            return decode_cursor(cursor, model)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    return read
