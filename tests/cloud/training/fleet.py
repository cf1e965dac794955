"""A fleet's labelled vibration windows, made as the hybrid loop makes them: the edge's
events go through ingest, their windows are uploaded as samples, and people's verdicts
label them; the shipped vibration model registered as the serving version."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from edge_agent.sources.machine_physics import FAULTS, LABELS, MachineSpec, SimulatedMachine
from shared.messages import encode
from shared.samples import WindowInfo
from shared.topics import Channel
from tests.cloud.helpers import (
    Publisher,
    client_as,
    make_batch,
    new_api_key,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.cloud.sample_helpers import npy_bytes, upload, window_sample
from tests.cloud.test_auth import enroll

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "vibration-anomaly-1.0.0.onnx"
DRIFTED = MachineSpec(shaft_hz=15.0)
"""The drifted machine: a new shaft speed the shipped model calls a fault 4 times in 10."""


def register_base(api: TestClient) -> None:
    """The shipped model as vibration-anomaly 1.0.0, through the registry's upload."""
    with SHIPPED.open("rb") as file:
        response = api.post(
            "/api/v1/models/vibration-anomaly/versions",
            data={"version": "1.0.0", "task": "vibration-anomaly", "labels": ",".join(LABELS)},
            files={"file": ("model.onnx", file, "application/octet-stream")},
        )
    assert response.status_code == 201, response.text


def labelled_fleet(
    api: TestClient,
    publisher: Publisher,
    *,
    spec: MachineSpec = DRIFTED,
    normal: int = 40,
    faults_each: int = 8,
    seed: int = 7,
) -> str:
    """One agent's ``normal`` windows behind a false alarm and ``faults_each`` windows of each
    fault behind confirmed alarms, labelled by a person; the agent's id."""
    agent_id = unique_agent_id("press")
    agent = client_as(api, basic=(agent_id, enroll(api, agent_id)))
    operator = client_as(api, new_api_key(api, "operate", name="alice"))
    machine = SimulatedMachine(spec, seed=seed)
    groups = [("normal", normal)] + [(fault, faults_each) for fault in FAULTS if faults_each]
    batch = make_batch(agent_id, len(groups), label="bearing_outer_race")
    publisher.publish(topic(agent_id, Channel.EVENTS), encode(batch))
    wait_until(
        lambda: (
            len(api.get("/api/v1/events", params={"agent_id": agent_id}).json()["items"])
            == len(groups)
        ),
        what="the events stored",
    )
    for event, (label, count) in zip(batch.events, groups, strict=True):
        for _ in range(count):
            window = machine.window(None if label == "normal" else label, 1.0)
            _upload_window(agent, agent_id, window, event_id=event.id)
        verdict: dict[str, Any] = (
            {"verdict": "false_alarm"}
            if label == "normal"
            else {"verdict": "relabel", "label": label}
        )
        response = operator.post(f"/api/v1/events/{event.id}/feedback", json=verdict)
        assert response.status_code == 201, response.text
    return agent_id


def _upload_window(agent: TestClient, agent_id: str, window: np.ndarray, *, event_id: str) -> None:
    blob = npy_bytes(window.astype(np.float32))
    meta, _ = window_sample(agent_id, shape=window.shape, reason="event", event_id=event_id)
    meta = meta.model_copy(
        update={
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "window": WindowInfo(shape=[window.shape[0]], sample_rate_hz=12800.0),
        }
    )
    response = upload(agent, meta, blob)
    assert response.status_code == 201, response.text
