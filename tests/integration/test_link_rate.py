"""The measured link rate, end to end: an agent (a child process) starts with a backlog in its
outbox, drains it through the real broker into the real cloud app, reports the rate it
measured from the cloud's acks in its status, and the placement report uses that rate when
the agent has no ``link_mbps`` label; a label wins over it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.tables import AgentRow
from edge_agent.delivery.outbox import Outbox
from shared.messages import MAX_LINK_MBPS, Event, ModelRef, new_event_id, utcnow
from tests.integration.conftest import (
    AgentProcess,
    agent_yaml,
    all_events,
    cloud_client,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

BACKLOG = 3000
"""Events waiting in the outbox when the agent starts: 150 batches of 20."""


def fill_outbox(path: Path) -> None:
    """The backlog of an agent that was offline for a while (another pipeline's events)."""
    model = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f" * 32)
    events = [
        Event(id=new_event_id(), pipeline="backfill", kind="anomaly", state="instant",
              label="imbalance", score=0.9, ts=utcnow(), seq=seq, model=model,
              attributes={"rms_g": 1.5, "peak_hz": 162.5})
        for seq in range(BACKLOG)
    ]  # fmt: skip
    outbox = Outbox(path, max_bytes=64 * 1024 * 1024, max_age_s=7 * 24 * 3600.0)
    outbox.put(events)
    outbox.close()


def placement_link(client: TestClient) -> dict[str, Any]:
    response = client.get("/api/v1/placement", params={"hours": 1, "link_mbps": 1000})
    assert response.status_code == 200, response.text
    (row,) = response.json()["pipelines"]
    return {key: row[key] for key in ("agent_id", "link_mbps", "link_source")}


def test_a_drained_backlog_gives_the_measured_rate_the_placement_report_uses(
    database_url: str,
    broker: Mosquitto,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    agent_id = f"link-{uuid.uuid4().hex[:8]}"
    config = agent_yaml(
        agent_id=agent_id, broker=broker, workdir=tmp_path, schedule=[], duration_s=8,
        speed=8, summary_interval_s=0.5,
    )  # fmt: skip
    fill_outbox(tmp_path / f"{agent_id}-outbox.db")
    with cloud_client(database_url, broker, tmp_path) as client:
        agents(config)

        def drained() -> float | None:
            """The rate in the agent's stored status, once it is done and its outbox empty."""
            with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
                row = session.get(AgentRow, agent_id)
                status: dict[str, Any] = row.last_status if row is not None else {}
            done = status.get("reason") == "sources finished" and status["outbox_depth"] == 0
            rate = status.get("link_mbps_measured")
            return float(rate) if done and rate is not None else None

        wait_until(lambda: drained() is not None, 90, "the agent to drain its backlog")
        measured = drained()
        assert len(all_events(client, agent_id=agent_id, pipeline="backfill")) == BACKLOG
        wait_until(
            lambda: client.get("/api/v1/placement", params={"hours": 1}).json()["pipelines"],
            30,
            "the agent's summaries in the database",
        )
        unlabelled = placement_link(client)

        with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
            session.get(AgentRow, agent_id).labels = {"link_mbps": "0.05"}
            session.commit()
        labelled = placement_link(client)

    assert measured is not None
    assert 0 < measured <= MAX_LINK_MBPS
    assert unlabelled == {"agent_id": agent_id, "link_mbps": measured, "link_source": "measured"}
    assert labelled == {"agent_id": agent_id, "link_mbps": 0.05, "link_source": "configured"}
