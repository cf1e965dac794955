"""Liveness, pure: online, offline by Last Will, or offline because heartbeats stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloud_api.liveness import HEARTBEAT_MISSED, LAST_WILL, Liveness, liveness
from cloud_api.tables import AgentRow

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def agent(
    state: str = "online",
    reason: str = "",
    *,
    silent_s: float | None = 0.0,
    heartbeat_s: float = 10,
) -> AgentRow:
    last_seen = None if silent_s is None else NOW - timedelta(seconds=silent_s)
    return AgentRow(agent_id="a", state=state, reason=reason, last_status={}, last_seen=last_seen,
                    heartbeat_s=heartbeat_s)  # fmt: skip


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (agent(), Liveness("online", "")),
        (agent(silent_s=30), Liveness("online", "")),  # three heartbeats: still within grace
        (agent(silent_s=30.001), Liveness("offline", HEARTBEAT_MISSED)),
        (agent(silent_s=None), Liveness("offline", HEARTBEAT_MISSED)),
        (agent(silent_s=None, heartbeat_s=0), Liveness("online", "")),  # no heartbeat promised
        (agent(silent_s=3600, heartbeat_s=0), Liveness("online", "")),
        (agent("offline"), Liveness("offline", LAST_WILL)),
        (agent("offline", "stopped by systemd"), Liveness("offline", "stopped by systemd")),
        # Enrolled, never connected: offline with enrollment's reason, not a Last Will.
        (
            agent("offline", "not connected yet", silent_s=None, heartbeat_s=0),
            Liveness("offline", "not connected yet"),
        ),
    ],
)
def test_an_agent_is_online_only_while_its_heartbeats_arrive(
    row: AgentRow, expected: Liveness
) -> None:
    judged = liveness(row, now=NOW, grace=3.0)
    assert judged == expected
    assert judged.online == (expected.state == "online")
