"""Escalations built as an agent builds them, the shipped cloud model registered as a
pipeline's cloud model (through the API, or straight into a database for a runner fed
batches directly), and a real MQTT reader of the cloud's answers."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import models
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.runner import Runner
from cloud_api.ingest.parse import Inbound
from cloud_api.registry import FileArtifactStore, load_or_create_signing_key, register_model
from cloud_api.tables import CloudModelRow
from edge_agent.sources.machine_physics import LABELS, MachineSpec, SimulatedMachine
from shared.escalations import Escalation, EscalationResult
from shared.messages import encode, new_event_id, utcnow
from shared.samples import PrivacyPolicy, WindowInfo
from shared.topics import Channel, Topic
from tests.cloud.helpers import MODEL, wait_until
from tests.cloud.sample_helpers import npy_bytes

MODELS = Path(models.__file__).resolve().parent
CLOUD_MODEL = "vibration-anomaly-cloud"
CLOUD_VERSION = "1.0.0"
PIPELINE = "spindle-vibration"


def register_cloud_model(client: TestClient | httpx.Client, pipeline: str = PIPELINE) -> None:
    """Upload the shipped cloud model (once per database) and make it ``pipeline``'s."""
    exists = client.get(f"/api/v1/models/{CLOUD_MODEL}/versions/{CLOUD_VERSION}")
    if exists.status_code == 404:
        onnx = (MODELS / f"{CLOUD_MODEL}-{CLOUD_VERSION}.onnx").read_bytes()
        uploaded = client.post(
            f"/api/v1/models/{CLOUD_MODEL}/versions",
            data={
                "version": CLOUD_VERSION,
                "task": "vibration-anomaly",
                "labels": ",".join(LABELS),
            },
            files={"file": ("model.onnx", onnx, "application/octet-stream")},
        )
        assert uploaded.status_code == 201, uploaded.text
    put = client.put(
        f"/api/v1/cloud-models/{pipeline}",
        json={"model": CLOUD_MODEL, "version": CLOUD_VERSION, "normal_label": LABELS[0]},
    )
    assert put.status_code == 200, put.text


def register_in_database(
    engine: Engine,
    data_dir: Path,
    *,
    pipeline: str = PIPELINE,
    model: str = CLOUD_MODEL,
    version: str = CLOUD_VERSION,
    task: str = "vibration-anomaly",
    labels: list[str] | None = None,
    normal_label: str | None = LABELS[0],
) -> None:
    """Register a shipped model in the database and artifact store under ``data_dir`` (as
    ``aiot models push`` does) and make it ``pipeline``'s cloud model."""
    onnx = MODELS / f"{model}-{version}.onnx"
    with Session(engine) as session, onnx.open("rb") as source:
        register_model(
            session, store=FileArtifactStore(data_dir / "artifacts"),
            signing_key=load_or_create_signing_key(data_dir), name=model, version=version,
            source=source, tmp_dir=data_dir / "tmp", max_bytes=1 << 30, task=task,
            labels=list(LABELS) if labels is None else labels,
        )  # fmt: skip
        session.add(
            CloudModelRow(
                pipeline=pipeline, model=model, version=version, normal_label=normal_label,
                updated_at=utcnow(), updated_by="test",
            )
        )  # fmt: skip
        session.commit()


def direct_runner(
    engine: Engine, data_dir: Path, *, batch_max: int = 32, quota: Quota | None = None
) -> Runner:
    """A runner on the models registered under ``data_dir``, fed batches by the test."""
    return Runner(
        engine=engine,
        artifacts=FileArtifactStore(data_dir / "artifacts"),
        quota=quota or Quota(per_min=6000, burst=1000),
        batch_max=batch_max,
        threads=1,
    )


def inbound(one: Escalation, *, agent_id: str | None = None) -> Inbound:
    """``one`` as the runner receives it, on its agent's topic (or ``agent_id``'s)."""
    where = Topic(agent_id or one.agent_id, Channel.ESCALATIONS)
    return Inbound(str(where), encode(one), 1, 1, False, 0.0, 0)


def windows(count: int, *, seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """Simulated accelerometer windows, the faults taken in turn."""
    machine = SimulatedMachine(MachineSpec(), seed=seed)
    return [machine.window(None if i % 6 == 0 else LABELS[i % 6]) for i in range(count)]


def escalation(
    agent_id: str,
    window: np.ndarray[Any, Any],
    *,
    label: str = "healthy",
    pipeline: str = PIPELINE,
    data: bytes | None = None,
    **changes: Any,
) -> Escalation:
    """An escalation of ``window`` (or of raw ``data``) with the edge's ``label``."""
    blob = npy_bytes(window) if data is None else data
    values: dict[str, Any] = {
        "id": new_event_id(),
        "agent_id": agent_id,
        "pipeline": pipeline,
        "ts": utcnow(),
        "model": MODEL,
        "label": label,
        "score": 0.5,
        "kind": "window",
        "window": WindowInfo(shape=list(window.shape), sample_rate_hz=12800.0),
        "privacy": PrivacyPolicy(),
        "data": base64.b64encode(blob).decode(),
    }
    values.update(changes)
    return Escalation.model_validate(values)


class Results:
    """A real MQTT client reading one agent's ``escalations/result``, as the agent would."""

    def __init__(self, port: int, agent_id: str) -> None:
        self.received: list[EscalationResult] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"res-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(str(Topic(agent_id, Channel.ESCALATION_RESULT)), qos=1)
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        result = EscalationResult.model_validate(json.loads(msg.payload))
        with self._lock:
            self.received.append(result)

    def wait(self, count: int) -> list[EscalationResult]:
        """The first ``count`` results, once that many arrived."""
        wait_until(lambda: len(self.received) >= count, what=f"{count} escalation results")
        with self._lock:
            return list(self.received[:count])

    def has(self, escalation_id: str) -> bool:
        with self._lock:
            return any(r.escalation_id == escalation_id for r in self.received)

    def by_id(self) -> dict[str, EscalationResult]:
        with self._lock:
            return {r.escalation_id: r for r in self.received}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
