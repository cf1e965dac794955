"""What the edge saves, end to end: the agent (a child process) reads raw vibration windows,
sends events and summaries, and ``/api/v1/stats/bandwidth`` shows raw bytes against bytes
sent, agreeing with the agent's own counters and with the events in the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    AgentProcess,
    agent_yaml,
    all_events,
    cloud_client,
    wait_until,
)
from tests.integration.test_end_to_end import agent_status, fault_schedule
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

WINDOW_BYTES = 2048 * 4  # float32 windows of the simulated accelerometer
WINDOWS = int(24 / (2048 / 12800)) - 1  # what 24 s of machine time gives, at least


def test_bytes_sent_against_raw_bytes_through_the_api(
    database_url: str,
    broker: Mosquitto,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    agent_id = f"bw-{uuid.uuid4().hex[:8]}"
    faults = ["imbalance", "bearing_outer_race"]
    # 24 s of machine time at 8x: about 3 s of wall clock, a summary every 0.5 s of it.
    config = agent_yaml(
        agent_id=agent_id, broker=broker, workdir=tmp_path,
        schedule=fault_schedule(faults, first_s=4, every_s=10, lasts_s=3),
        duration_s=24, speed=8, summary_interval_s=0.5,
    )  # fmt: skip
    with cloud_client(database_url, broker, tmp_path) as client:
        agents(config)

        def finished() -> dict[str, Any] | None:
            status = agent_status(client, agent_id)
            # The first heartbeat may come before the pipeline thread starts: count samples.
            read = (status.get("pipelines") or [{}])[0].get("samples_in", 0) >= WINDOWS
            done = status.get("reason") == "sources finished" and status["outbox_depth"] == 0
            return status if read and done else None

        wait_until(lambda: finished() is not None, 60, "the agent to finish and flush")
        pipeline = (finished() or {})["pipelines"][0]

        def report() -> dict[str, Any]:
            response = client.get("/api/v1/stats/bandwidth", params={"agent_id": agent_id})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        wait_until(
            lambda: report()["total"]["samples_in"] == pipeline["samples_in"],
            30,
            "the last summary in the database",
        )
        body = report()
        events = all_events(client, agent_id=agent_id)

    (row,) = body["pipelines"]
    assert (row["agent_id"], row["pipeline"]) == (agent_id, "spindle-vibration")
    assert row["summaries"] >= 3
    assert row["samples_in"] == row["inferences"] == pipeline["samples_in"] >= WINDOWS
    assert row["raw_bytes"] == pipeline["raw_bytes"] == row["samples_in"] * WINDOW_BYTES
    assert row["events"] == len(events) == 2 * len(faults)
    # The agent's counter also holds the last summary, which no summary can count.
    last_summary_size = pipeline["sent_bytes"] - row["sent_bytes"]
    assert 200 < last_summary_size < 2000
    assert row["saved_bytes"] == row["raw_bytes"] - row["sent_bytes"]
    assert row["ratio"] == pytest.approx(row["sent_bytes"] / row["raw_bytes"])
    assert row["ratio"] < 0.01, "the edge sends less than 1% of what it reads"
    assert body["total"]["raw_bytes"] == row["raw_bytes"]
    assert body["total"]["sent_bytes"] == row["sent_bytes"]
