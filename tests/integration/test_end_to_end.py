"""One path through the whole platform: simulated sensor -> ONNX -> MQTT -> SQL -> REST.

Real Mosquitto, real ONNX Runtime on the shipped model, the agent as a child process
(`aiot edge run`), the real FastAPI app with its in-process ingest worker, on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.delivery.outbox import Outbox
from tests.integration.conftest import (
    MANIFEST,
    AgentProcess,
    agent_yaml,
    all_events,
    cloud_client,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

FAULTS = ["imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race", "impact"]
SHIPPED = json.loads(MANIFEST.read_text())["models"][0]


def fault_schedule(
    faults: list[str], *, first_s: float, every_s: float, lasts_s: float
) -> list[dict[str, Any]]:
    return [
        {"at_s": first_s + i * every_s, "duration_s": lasts_s, "fault": fault}
        for i, fault in enumerate(faults)
    ]


def expected_sequence(faults: list[str]) -> list[tuple[str, str]]:
    return [(state, fault) for fault in faults for state in ("start", "end")]


def observed_sequence(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ordered = sorted(events, key=lambda e: (e["ts"], e["state"] != "start"))
    return [(e["state"], e["label"]) for e in ordered]


def agent_status(client: Any, agent_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/agents/{agent_id}")
    return response.json() if response.status_code == 200 else {}


def test_fault_schedule_gives_exactly_the_expected_events(
    database_url: str,
    broker: Mosquitto,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    agent_id = f"e2e-{uuid.uuid4().hex[:8]}"
    schedule = fault_schedule(FAULTS, first_s=4, every_s=6, lasts_s=2.5)
    duration_s = 34.0
    config = agent_yaml(
        agent_id=agent_id, broker=broker, workdir=tmp_path, schedule=schedule,
        duration_s=duration_s, speed=0,
    )  # fmt: skip
    windows = int(duration_s / (2048 / 12800.0))
    with cloud_client(database_url, broker, tmp_path) as client:
        agents(config)

        def source_done_and_outbox_empty() -> bool:
            status = agent_status(client, agent_id)
            pipelines = status.get("pipelines") or [{}]
            return pipelines[0].get("samples_in", 0) >= windows and status.get("outbox_depth") == 0

        wait_until(source_done_and_outbox_empty, 60, "the agent to read the whole schedule")
        wait_until(
            lambda: len(all_events(client, agent_id=agent_id)) >= 2 * len(FAULTS),
            30,
            "every event in the database",
        )
        time.sleep(1.0)  # anything extra that was still on its way would show now
        events = all_events(client, agent_id=agent_id)

    assert observed_sequence(events) == expected_sequence(FAULTS)
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["pipeline"] == "spindle-vibration"
        assert event["model_name"] == SHIPPED["name"]
        assert event["model_version"] == SHIPPED["version"]
        assert event["model_sha256"] == SHIPPED["sha256"]


@pytest.mark.slow  # about 22 s: in make test's second phase
def test_broker_outage_loses_and_duplicates_nothing(
    own_broker: Mosquitto,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    agent_id = f"outage-{uuid.uuid4().hex[:8]}"
    faults = FAULTS * 2
    schedule = fault_schedule(faults, first_s=4, every_s=8, lasts_s=3)
    # 4x real time: about 21 s of wall clock, with the broker away for 10 s in the middle.
    config = agent_yaml(
        agent_id=agent_id, broker=own_broker, workdir=tmp_path, schedule=schedule,
        duration_s=86, speed=4,
    )  # fmt: skip
    with cloud_client(f"sqlite:///{tmp_path / 'cloud.db'}", own_broker, tmp_path) as client:
        agents(config)
        wait_until(lambda: len(all_events(client, agent_id=agent_id)) >= 2, 30, "first events")
        own_broker.stop()
        time.sleep(10)
        own_broker.start()
        wait_until(
            lambda: len(all_events(client, agent_id=agent_id)) >= 2 * len(faults),
            90,
            "every event after the outage",
        )
        time.sleep(1.0)
        events = all_events(client, agent_id=agent_id)

    assert observed_sequence(events) == expected_sequence(faults)
    assert len({e["id"] for e in events}) == len(events)


def test_sigkill_loses_nothing_the_outbox_held(
    own_broker: Mosquitto,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    agent_id = f"kill-{uuid.uuid4().hex[:8]}"
    schedule = fault_schedule(FAULTS * 8, first_s=2, every_s=4, lasts_s=2)
    config = agent_yaml(
        agent_id=agent_id, broker=own_broker, workdir=tmp_path, schedule=schedule,
        duration_s=170, speed=8,
    )  # fmt: skip
    outbox_path = tmp_path / f"{agent_id}-outbox.db"
    with cloud_client(f"sqlite:///{tmp_path / 'cloud.db'}", own_broker, tmp_path) as client:
        agent = agents(config)
        wait_until(lambda: len(all_events(client, agent_id=agent_id)) >= 2, 30, "first events")
        own_broker.stop()  # the agent keeps detecting; events pile up in its outbox
        wait_until(lambda: _outbox_ids(outbox_path) != set(), 30, "events in the outbox")
        time.sleep(1.0)
        agent.kill()
        held = _outbox_ids(outbox_path)
        own_broker.start()
        agent.start()
        wait_until(
            lambda: held <= {e["id"] for e in all_events(client, agent_id=agent_id)},
            60,
            "every event the outbox held to reach the database",
        )
        events = all_events(client, agent_id=agent_id)

    assert held, "the outbox held events when the agent was killed"
    counts = Counter(e["id"] for e in events)
    assert all(counts[event_id] == 1 for event_id in held)
    assert max(counts.values()) == 1


def _outbox_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    outbox = Outbox(path, max_bytes=1 << 30, max_age_s=1e9)
    try:
        return {i.item_id for i in outbox.next_batch(100_000) if i.kind == "event"}
    finally:
        outbox.close()


def test_malformed_payload_is_dead_lettered_and_ingest_keeps_going(
    broker: Mosquitto, tmp_path: Path
) -> None:
    agent_id = f"bad-{uuid.uuid4().hex[:8]}"
    topic = f"aiot/v1/agents/{agent_id}/events"
    with cloud_client(f"sqlite:///{tmp_path / 'cloud.db'}", broker, tmp_path) as client:
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
             "-t", topic, "-m", '{"schema": 1, "agent_id": "oops"'],
            check=True, timeout=10,
        )  # fmt: skip

        def dead_letter() -> dict[str, Any] | None:
            items = client.get("/api/v1/dead-letters").json()["items"]
            return next((d for d in items if d["topic"] == topic), None)

        wait_until(lambda: dead_letter() is not None, 20, "the dead letter")
        letter = dead_letter()
        assert letter is not None
        assert letter["reason"]
        assert "agent_id" in letter["payload"]

        valid = {
            "schema": 1, "agent_id": agent_id, "sent_at": datetime.now(UTC).isoformat(),
            "events": [{
                "id": str(uuid.uuid4()), "pipeline": "p", "kind": "anomaly", "state": "start",
                "label": "imbalance", "score": 0.9, "ts": datetime.now(UTC).isoformat(),
                "seq": 1, "model": {"name": "m", "version": "1", "sha256": "0" * 64},
            }],
        }  # fmt: skip
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
             "-t", topic, "-m", json.dumps(valid)],
            check=True, timeout=10,
        )  # fmt: skip
        wait_until(
            lambda: len(all_events(client, agent_id=agent_id)) == 1, 20, "the valid batch stored"
        )
