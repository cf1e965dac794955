"""The remote configuration messages: an overlay is JSON every database stores, bounded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.fields import MAX_OVERLAY_BYTES, MAX_OVERLAY_DEPTH
from shared.messages import (
    AgentStatus,
    ConfigOverlay,
    ConfigStatus,
    encode,
    utcnow,
)

GOOD = {
    "log_level": "INFO",
    "pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.6}}}},
}


def overlay(body: Any) -> ConfigOverlay:
    return ConfigOverlay(agent_id="press-3", version=1, issued_at=utcnow(), overlay=body)


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth + 1`` levels deep."""
    body: dict[str, Any] = {}
    for _ in range(depth):
        body = {"k": body}
    return body


def test_an_overlay_round_trips_on_the_wire() -> None:
    message = overlay(GOOD)
    assert ConfigOverlay.model_validate_json(encode(message)) == message
    status = AgentStatus(
        agent_id="press-3", state="online", ts=utcnow(),
        config=ConfigStatus(desired_version=2, applied_version=1, applied=GOOD, refused="no"),
    )  # fmt: skip
    assert AgentStatus.model_validate_json(encode(status)).config == status.config


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([1], "must be an object"),
        ({"a": "nul\u0000"}, "NUL"),
        ({"a": float("nan")}, "finite"),
        ({"a": 2**63}, "64 bits"),
        ({"a": b"bytes"}, "is not JSON"),
        (nested(MAX_OVERLAY_DEPTH), "nested deeper"),
        ({"a": "x" * MAX_OVERLAY_BYTES}, f"at most {MAX_OVERLAY_BYTES} bytes"),
    ],
)
def test_an_overlay_the_databases_could_not_store_is_refused(body: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        overlay(body)


def test_versions_are_positive_and_the_schema_is_strict() -> None:
    with pytest.raises(ValidationError):
        ConfigOverlay(agent_id="press-3", version=0, issued_at=utcnow())
    with pytest.raises(ValidationError):
        ConfigOverlay.model_validate({"agent_id": "press-3", "version": 1,
                                      "issued_at": "2026-12-03T10:00:00Z", "extra": 1})  # fmt: skip
    overlay(nested(MAX_OVERLAY_DEPTH - 1))  # as deep as allowed
