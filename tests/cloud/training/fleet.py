"""A fleet's labelled vibration windows, made as the hybrid loop makes them: the edge's
events go through ingest, their windows are uploaded as samples, and people's verdicts
label them; the shipped vibration model registered as the serving version."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from cloud_api.training.datasets import split_of
from cloud_api.training.trainers import VibrationOptions
from edge_agent.sources.machine_physics import FAULTS, LABELS, MachineSpec, SimulatedMachine
from shared.messages import encode, new_event_id
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
DEFAULT_TEST_SHARE = VibrationOptions().test_share
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
    """One agent's ``normal`` vibration windows behind a false alarm and ``faults_each``
    windows of each fault behind alarms a person relabelled; the agent's id."""
    machine = SimulatedMachine(spec, seed=seed)
    groups = [("normal", [machine.window(None) for _ in range(normal)])]
    groups += [
        (fault, [machine.window(fault, 1.0) for _ in range(faults_each)]) for fault in FAULTS
    ]
    return labelled_windows(api, publisher, [(label, w) for label, w in groups if w])


def labelled_windows(
    api: TestClient,
    publisher: Publisher,
    groups: list[tuple[str, list[np.ndarray]]],
    *,
    pipeline: str = "spindle-vibration",
    verdicts: bool = True,
) -> str:
    """A new agent's events, one per group, each with its windows uploaded as samples and
    (``verdicts``) a person's verdict: a false alarm for ``normal``, else a relabel to the
    group's label. Without verdicts the samples carry the edge's label only."""
    agent_id = unique_agent_id("press")
    agent = client_as(api, basic=(agent_id, enroll(api, agent_id)))
    operator = client_as(api, new_api_key(api, "operate", name="alice"))
    batch = make_batch(agent_id, len(groups), label="bearing_outer_race", pipeline=pipeline)
    publisher.publish(topic(agent_id, Channel.EVENTS), encode(batch))
    wait_until(
        lambda: (
            len(api.get("/api/v1/events", params={"agent_id": agent_id}).json()["items"])
            == len(groups)
        ),
        timeout=60,
        what="the events stored",
    )
    for event, (label, windows) in zip(batch.events, groups, strict=True):
        for index, window in enumerate(windows):
            held_out = index % 4 == 0
            _upload_window(
                agent, agent_id, window, event_id=event.id, pipeline=pipeline, held_out=held_out
            )
        if not verdicts:
            continue
        verdict: dict[str, Any] = (
            {"verdict": "false_alarm"}
            if label == "normal"
            else {"verdict": "relabel", "label": label}
        )
        response = operator.post(f"/api/v1/events/{event.id}/feedback", json=verdict)
        assert response.status_code == 201, response.text
    return agent_id


def split_id(held_out: bool) -> str:
    """A new sample id that the job's default split (a quarter held out) puts in the held-out
    set or not, as asked: with seeded windows, every run holds out the same windows."""
    wanted = "test" if held_out else "train"
    while True:
        sample_id = new_event_id()
        if split_of(sample_id, DEFAULT_TEST_SHARE) == wanted:
            return sample_id


def _upload_window(
    agent: TestClient,
    agent_id: str,
    window: np.ndarray,
    *,
    event_id: str,
    pipeline: str,
    held_out: bool,
) -> None:
    blob = npy_bytes(window.astype(np.float32))
    meta, _ = window_sample(
        agent_id, shape=window.shape, reason="event", event_id=event_id, pipeline=pipeline,
        id=split_id(held_out),
    )  # fmt: skip
    meta = meta.model_copy(
        update={
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "window": WindowInfo(shape=list(window.shape), sample_rate_hz=12800.0),
        }
    )
    response = upload(agent, meta, blob)
    assert response.status_code == 201, response.text
