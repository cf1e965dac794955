"""The field types wire messages are made of: the strict contract, one alias per rule.

The contract is strict, so that what it accepts SQLite and PostgreSQL both store (through
ingest) and the API can compute with. Each rule is one alias below, used by every field it
concerns (in ``shared.messages`` and ``shared.signing``):

- ``Int64``, ``Count``: a JSON integer, never ``1.0``, ``"1"`` or ``true``; within a signed
  64-bit SQL column (``-2**63 .. 2**63-1``); counters are ``>= 0``.
- ``FiniteFloat``: a JSON number, never a string or a boolean. JSON has one number type, so
  ``1`` is a valid float (it becomes ``1.0``). Finite only: ``NaN``, ``Infinity`` and
  literals that overflow to infinity (``1e400``) are refused; ``1e308`` is stored as is.
- Numbers with a meaning have a range: ``Score`` ``|score| <= 1e9`` (ingest adds scores up in
  float8 rollups), ``Seconds`` ``0 .. 100 years`` (uptime, ages, round trips; a gateway that
  booted at 1970 and then set its clock is still believed), ``HeartbeatSeconds`` ``0`` (not
  said: the Last Will) or up to one day (the API computes deadlines from it).
- ``SafeText`` (every free-text string, dict keys too): no NUL and no lone surrogate, which
  PostgreSQL text (UTF-8) cannot hold; lengths bounded by each alias.
- ``UtcDatetime``: ISO 8601 text with a UTC offset (not a unix time, not a bare date), between
  1970-01-01 and 9999-12-31T23:59:59.999999 once converted to UTC (``9999-12-31T23:00-05:00``
  is past year 9999 in UTC and refused, never an OverflowError later). The offset is kept as
  sent. 1970 is a gateway whose clock was never set; earlier is not a time a device reports.
- ``AttributeValue``: a boolean, an ``Int64``, a finite float or a ``SafeText`` of at most
  256 characters, as JSON typed it (``1`` stays an int, ``1.0`` a float, ``"1"`` a string);
  no arrays, objects or null.
- Sizes: every string, list and dict has a maximum length (the ``MAX_*`` constants).

Python callers (the edge building messages, the cloud reading stored JSON back) meet the same
rules, except that numpy scalars count as the numbers they are.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
)

from shared.topics import AGENT_ID_PATTERN

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 256

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_SCORE = 1e9
MAX_SECONDS = 100 * 365.25 * 86400
MAX_HEARTBEAT_S = 86400.0
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _safe_text(value: str) -> str:
    if _UNSAFE_TEXT.search(value) is not None:
        raise ValueError("text must not contain NUL (\\u0000) or an unpaired surrogate")
    return value


def _datetime_text(value: object) -> object:
    """Only ISO 8601 date-times are times: pydantic would also read numbers as unix times."""
    if (type(value) is str and value[4:5] == "-") or isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 date and time with an offset, e.g. 2026-11-22T10:15:03Z")


def _utc_range(value: datetime) -> datetime:
    # Offsets are under a day, so only the first and last year need the (slower) comparison,
    # which works on aware datetimes without converting them (astimezone could overflow).
    if 1970 < value.year < 9999 or EARLIEST <= value <= LATEST:
        return value
    raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} in UTC")


SafeText = AfterValidator(_safe_text)
"""Marks a string that PostgreSQL's UTF-8 text can hold: no NUL, no unpaired surrogate."""

Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[Int64, Field(ge=0)]
RowId = Annotated[Int64, Field(ge=1)]
"""The id of a cloud row (a deployment): a positive ``Int64``."""
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Score = Annotated[FiniteFloat, Field(ge=-MAX_SCORE, le=MAX_SCORE)]
Seconds = Annotated[FiniteFloat, Field(ge=0, le=MAX_SECONDS)]
HeartbeatSeconds = Annotated[FiniteFloat, Field(ge=0, le=MAX_HEARTBEAT_S)]
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_datetime_text), AfterValidator(_utc_range)]
AgentId = Annotated[str, Strict(), StringConstraints(pattern=AGENT_ID_PATTERN)]
Name = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Sha256 = Annotated[str, Strict(), StringConstraints(pattern=r"^[0-9a-f]{64}$")]
EventId = Annotated[
    str,
    Strict(),
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Label = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128), SafeText]
Reason = Annotated[str, Strict(), StringConstraints(max_length=512), SafeText]
SignalName = Name


def _attribute_value(value: object) -> AttributeValue:
    """One attribute, kept as JSON typed it (``1`` an int, ``1.0`` a float, ``"1"`` a string).

    Python callers may pass numpy scalars: they are numbers, so they become int or float.
    """
    if isinstance(value, bool):  # before int: a bool is an int in Python, never in JSON
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise ValueError("a float must be finite (no NaN or Infinity)")
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        raise ValueError("an integer must fit in 64 bits (-2**63 .. 2**63-1)")
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            raise ValueError(f"a text has at most {MAX_ATTRIBUTE_TEXT} characters")
        return _safe_text(value)
    if isinstance(value, numbers.Integral):
        return _attribute_value(int(value))
    if isinstance(value, numbers.Real):
        return _attribute_value(float(value))
    raise ValueError(f"must be a boolean, a number or a string, not {_json_kind(value)}")


def _attributes(value: object) -> dict[str, AttributeValue]:
    """Flat name -> value pairs; one validator for the dict, as ingest reads many of them."""
    if not isinstance(value, dict):
        raise ValueError(f"attributes must be an object, not {_json_kind(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, not {len(value)}")
    checked: dict[str, AttributeValue] = {}
    for name, item in value.items():
        if type(name) is not str or len(name) > MAX_ATTRIBUTE_NAME:
            raise ValueError(
                f"attribute names are strings of at most {MAX_ATTRIBUTE_NAME} characters"
            )
        try:
            checked[_safe_text(name)] = _attribute_value(item)
        except ValueError as exc:
            raise ValueError(f"attribute {name!r}: {exc}") from None
    return checked


def _json_kind(value: object) -> str:
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )


AttributeValue = bool | int | float | str
"""What an attribute holds: a boolean, an ``Int64``, a finite float or a short ``SafeText``."""
Attributes = Annotated[
    dict[str, AttributeValue],
    PlainValidator(_attributes, json_schema_input_type=dict[str, AttributeValue]),
]
"""An event's flat attributes (``{"rms_g": 1.84}``): no arrays, objects or null inside."""


MAX_OVERLAY_BYTES = 16 * 1024
"""A configuration overlay's JSON: a few thresholds and intervals per pipeline fit many times."""
MAX_OVERLAY_DEPTH = 6
"""Objects and arrays nest at most this deep in an overlay (the overlay itself is the first)."""


def _overlay_value(value: object, depth: int) -> None:
    """Raise ValueError unless ``value`` is JSON every database stores (see the module doc)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("an integer must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a float must be finite (no NaN or Infinity)")
    elif isinstance(value, str):
        _safe_text(value)
    elif depth >= MAX_OVERLAY_DEPTH:
        raise ValueError(f"nested deeper than {MAX_OVERLAY_DEPTH} levels")
    elif isinstance(value, list):
        for item in value:
            _overlay_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError("object keys must be strings")
            _safe_text(key)
            _overlay_value(item, depth + 1)
    else:
        raise ValueError(f"{type(value).__name__} is not JSON")


def _overlay(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a configuration overlay must be an object")
    _overlay_value(value, 0)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_OVERLAY_BYTES:
        raise ValueError(
            f"a configuration overlay has at most {MAX_OVERLAY_BYTES} bytes, not {size}"
        )
    return value


OverlayJson = Annotated[
    dict[str, Any], PlainValidator(_overlay, json_schema_input_type=dict[str, Any])
]
"""A configuration overlay: a JSON object of at most MAX_OVERLAY_BYTES whose values every
database stores (64-bit integers, finite floats, text without NUL). Only the agent knows which
keys it accepts: it validates the overlay against its own config classes."""
