"""Whether an agent is online, and if not, why: one rule for the REST API and the rollouts.

An agent that said ``online`` but has been silent for ``grace`` heartbeats is offline even
though no Last Will arrived (a broker restart or a partition can lose it). A plain value comes
back; the routes shape it for the API, the rollout worker reads it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cloud_api.tables import AgentRow

HEARTBEAT_MISSED = "heartbeat missed"
LAST_WILL = "connection lost (last will)"


@dataclass(frozen=True, slots=True)
class Liveness:
    """An agent's state as the cloud judges it; ``reason`` says why when it is offline."""

    state: Literal["online", "offline"]
    reason: str

    @property
    def online(self) -> bool:
        """Whether the agent counts as connected now."""
        return self.state == "online"


def liveness(agent: AgentRow, *, now: datetime, grace: float) -> Liveness:
    """Online or offline at ``now``, from the agent's last status and heartbeat interval."""
    state, reason = agent.state, agent.reason
    if state == "offline":
        reason = reason or LAST_WILL
    elif agent.heartbeat_s > 0 and (
        agent.last_seen is None
        or now - agent.last_seen > timedelta(seconds=grace * agent.heartbeat_s)
    ):
        state, reason = "offline", HEARTBEAT_MISSED
    return Liveness(state="online" if state == "online" else "offline", reason=reason)
