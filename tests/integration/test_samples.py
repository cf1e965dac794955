"""Collection end to end: real agents (in this process), a real broker, the real API served
over HTTP on SQLite and PostgreSQL. What the agents keep, what leaves them, and what the
cloud stores: by the policy's rules and rates, within the privacy policy, once each even
across an outage.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

import models
from cli.broker import free_port
from cli.server import serve_in_thread
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.delivery.spool import Spool
from edge_agent.delivery.uploader import Uploader, UploadTarget
from edge_agent.updates.download import DownloadPolicy
from tests.cloud.sample_helpers import window_sample
from tests.integration.test_rollout import wait_for
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"
FAULTS = [
    {"at_s": 60, "duration_s": 30, "fault": "bearing_outer_race"},
    {"at_s": 150, "duration_s": 30, "fault": "imbalance"},
]
PERSONS: list[dict[str, Any]] = [
    {"label": "person", "enter_s": 1, "start_xy": [-20, 150], "velocity": [40, 0],
     "size": [40, 100]},
    {"label": "car", "enter_s": 3, "start_xy": [-50, 240], "velocity": [70, 0], "size": [90, 45]},
]  # fmt: skip


@dataclass
class Cloud:
    url: str
    http: httpx.Client
    data_dir: Path


@contextmanager
def serve(settings: Settings, port: int) -> Iterator[Cloud]:
    """The real app in uvicorn on ``port``, and a client with an admin key."""
    app = create_app(settings)
    with serve_in_thread(app, port=port) as url:
        with app.state.sessionmaker() as session:
            _, key = create_api_key(session, name=f"test-{uuid.uuid4().hex[:6]}", scope="admin")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=30.0, headers=headers) as http:
            yield Cloud(url, http, settings.data_dir)


@pytest.fixture
def settings(database_url: str, broker: Mosquitto, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=tmp_path / "cloud",
        ingest_client_id=f"ingest-{tmp_path.name}"[:64], ingest_flush_s=0.02,
    )  # fmt: skip


def enroll(cloud: Cloud, agent_id: str, workdir: Path) -> dict[str, Any]:
    """The agent's ``cloud:`` section, with the credentials enrollment gave it."""
    enrolled = cloud.http.post("/api/v1/agents", json={"agent_id": agent_id})
    assert enrolled.status_code == 201, enrolled.text
    password_file = workdir / agent_id / "password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(enrolled.json()["password"])
    return {"api_url": cloud.url, "username": agent_id, "password_file": str(password_file)}


def vibration(name: str, collect: dict[str, Any], duration_s: float) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "simulated_vibration", "seed": 11, "speed": 0,
                   "duration_s": duration_s, "schedule": FAULTS},
        "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)},
        "collect": collect,
        "summary_interval_s": 0,
    }  # fmt: skip


def camera(name: str, privacy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "synthetic_scene", "fps": 10, "speed": 0, "seed": 3,
                   "duration_s": 12, "actors": PERSONS},
        "model": {"name": "scene-detector", "manifest": str(MANIFEST)},
        "collect": {"random_share": 0.3, "seed": 5, "max_per_minute": 1000},
        "privacy": privacy,
        "summary_interval_s": 0,
    }  # fmt: skip


def agent_config(
    agent_id: str, cloud: dict[str, Any], broker: Mosquitto, workdir: Path, **more: Any
) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent_id": agent_id,
            "mqtt": {"url": broker.url, "heartbeat_s": 1.0},
            "outbox": {"path": str(workdir / agent_id / "outbox.db")},
            "cloud": cloud,
            **more,
        }
    )


def samples(cloud: Cloud, **params: Any) -> list[dict[str, Any]]:
    """Every sample the API lists for the filters, walking the pages."""
    items: list[dict[str, Any]] = []
    query = {**params, "limit": 1000}
    while True:
        page = cloud.http.get("/api/v1/samples", params=query).json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


def run_to_the_end(agent: Agent) -> None:
    wait_for(agent.sources_done, "the sources to end")
    assert agent.spool is not None
    agent.spool.flush()
    wait_for(lambda: agent.spool is not None and agent.spool.depth() == 0, "an empty spool")


def test_a_vibration_pipeline_keeps_samples_by_its_rules_and_rates(
    settings: Settings, broker: Mosquitto, tmp_path: Path
) -> None:
    with serve(settings, free_port()) as cloud:
        agent_id = f"vib-{uuid.uuid4().hex[:8]}"
        collect = {"random_share": 0.05, "band": [0.3, 0.7], "before": 2, "after": 2,
                   "max_per_minute": 15, "seed": 1}  # fmt: skip
        config = agent_config(
            agent_id, enroll(cloud, agent_id, tmp_path), broker, tmp_path,
            pipelines=[vibration("spindle", collect, duration_s=240)],
        )  # fmt: skip
        agent = Agent(config)
        agent.start()
        try:
            run_to_the_end(agent)
            status = agent.status().pipelines[0]
        finally:
            agent.stop()
        kept = samples(cloud, agent_id=agent_id)
        starts = wait_for(lambda: starts_of(cloud, agent_id), "the events")

    assert len(kept) == sum(status.samples_kept.values())
    assert status.samples_uploaded == len(kept)
    assert status.sample_bytes_uploaded == sum(s["meta"]["size"] for s in kept)
    reasons = Counter(s["reason"] for s in kept)
    assert reasons["event"] >= 1
    assert reasons["random"] >= 1
    # Event starts are behind samples: their own input and the ones around it (the cap of 15 a
    # minute may take the ones around an event that came in a busy minute).
    by_event = Counter(s["event_id"] for s in kept if s["reason"] == "event")
    assert set(by_event) <= starts
    assert max(by_event.values()) >= 2
    # The cap: never more than 15 kept in a minute of the inputs' time.
    per_minute = Counter(datetime.fromisoformat(s["ts"]).timestamp() // 60 for s in kept)
    assert max(per_minute.values()) <= 15
    assert status.samples_capped > 0
    window = kept[0]["meta"]["window"]
    assert (window["shape"], window["dtype"], window["sample_rate_hz"]) == (
        [2048], "float32", 12800.0,
    )  # fmt: skip
    band = [s for s in kept if s["reason"] == "band"]
    assert all(0.3 <= s["meta"]["score"] <= 0.7 for s in band)


def starts_of(cloud: Cloud, agent_id: str) -> set[str]:
    page = cloud.http.get("/api/v1/events", params={"agent_id": agent_id, "limit": 1000}).json()
    return {e["id"] for e in page["items"] if e["state"] == "start"}


def test_the_spool_holds_its_bound_offline_and_each_kept_sample_arrives_once(
    settings: Settings, broker: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()
    agent_id = f"off-{uuid.uuid4().hex[:8]}"
    bound = 120_000  # about 14 windows of 2048 float32 values
    with serve(settings, port) as cloud:
        section = enroll(cloud, agent_id, tmp_path)
    collect = {"random_share": 0.2, "seed": 2, "max_per_minute": 1000, "max_per_day": 100_000}
    config = agent_config(
        agent_id, section, broker, tmp_path,
        spool={"max_bytes": bound, "upload_backoff_s": 0.05, "upload_backoff_max_s": 0.2},
        pipelines=[vibration("spindle", collect, duration_s=120)],
    )  # fmt: skip
    agent = Agent(config)
    agent.start()
    try:
        wait_for(agent.sources_done, "the source to end while the cloud is down")
        assert agent.spool is not None
        agent.spool.flush()
        waiting = {entry.id for entry in agent.spool.oldest(10_000)}
        on_disk = sum(p.stat().st_size for p in agent.spool.root.iterdir())
        status = agent.status()
        assert status.spool_bytes == on_disk <= bound
        assert status.spool_dropped == sum(status.pipelines[0].samples_kept.values()) - len(waiting)
        assert status.spool_dropped > 0
        assert agent.uploader is not None
        assert agent.uploader.counters.failures > 0
        with serve(settings, port) as cloud:
            wait_for(lambda: agent.spool is not None and agent.spool.depth() == 0, "uploads")
            arrived = samples(cloud, agent_id=agent_id)
    finally:
        agent.stop()
    assert sorted(s["id"] for s in arrived) == sorted(waiting)
    assert agent.uploader is None


def test_cameras_send_no_pixels_under_never_and_blurred_people_under_crops(
    settings: Settings, broker: Mosquitto, tmp_path: Path
) -> None:
    with serve(settings, free_port()) as cloud:
        agent_id = f"cam-{uuid.uuid4().hex[:8]}"
        pipelines = [
            camera("never", {}),
            camera("blurred", {"images": "crops", "blur": ["person"]}),
            camera("clear", {"images": "crops"}),
            vibration("spindle", {"random_share": 0.1, "seed": 1}, duration_s=20),
        ]
        config = agent_config(
            agent_id, enroll(cloud, agent_id, tmp_path), broker, tmp_path, pipelines=pipelines
        )
        agent = Agent(config)
        agent.start()
        try:
            run_to_the_end(agent)
        finally:
            agent.stop()
        assert agent.pipelines[0].collector is None
        kept = {p: samples(cloud, agent_id=agent_id, pipeline=p) for p in ("never", "blurred",
                "clear", "spindle")}  # fmt: skip
        blobs = {
            s["id"]: cloud.http.get(s["blob_url"]).content for s in kept["blurred"] + kept["clear"]
        }
    # No pixels of the `never` camera reached the cloud; the sensor's samples did.
    assert kept["never"] == []
    assert kept["spindle"]
    stored = list((cloud.data_dir / "artifacts" / "samples" / agent_id).iterdir())
    assert len(stored) == sum(len(items) for items in kept.values())
    # The same scene through both cameras: the same crops, blurred where a person is.
    blurred, clear = (
        sorted(kept[p], key=lambda s: (s["ts"], s["meta"]["image"]["box"]))
        for p in ("blurred", "clear")
    )
    assert [s["meta"]["image"]["box"] for s in blurred] == [
        s["meta"]["image"]["box"] for s in clear
    ]
    people = 0
    for b, c in zip(blurred, clear, strict=True):
        (detection,) = b["meta"]["image"]["detections"]
        assert b["meta"]["privacy"] == {"images": "crops", "blur": ["person"], "keep_labels": []}
        if detection["label"] != "person":
            assert b["meta"]["image"]["blurred"] == 0
            continue
        people += 1
        assert b["meta"]["image"]["blurred"] >= 1
        region = person_region(b["meta"]["image"])
        sharp, smooth = (region_variance(blobs[s["id"]], region) for s in (c, b))
        assert smooth < 0.3 * sharp, (smooth, sharp)
    assert people > 0


def person_region(image: dict[str, Any]) -> tuple[slice, slice]:
    """The inner part of the person's box, in the crop's pixels."""
    left, top = image["box"][0], image["box"][1]
    x1, y1, x2, y2 = image["detections"][0]["box"]
    return (
        slice(int(y1 - top) + 3, int(y2 - top) - 3),
        slice(int(x1 - left) + 3, int(x2 - left) - 3),
    )


def region_variance(jpeg: bytes, region: tuple[slice, slice]) -> float:
    """Variance of the Laplacian (the fine detail) over the region of a JPEG."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return float(cv2.Laplacian(image[region].astype(np.float32), cv2.CV_32F).var())


def test_the_uploader_drops_what_the_cloud_refuses_and_delivers_the_rest(
    settings: Settings, tmp_path: Path
) -> None:
    """A sample the cloud refuses for good (its window is not the shape it declares) leaves
    the spool, counted; the samples around it arrive."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, max_files=100, queue_size=10)
    with serve(settings, free_port()) as cloud:
        agent_id = f"up-{uuid.uuid4().hex[:8]}"
        section = enroll(cloud, agent_id, tmp_path)
        good, blob = window_sample(agent_id, shape=(64,))
        bad, bad_blob = window_sample(agent_id, shape=(64,), declared=(32,), seed=1)
        later, later_blob = window_sample(agent_id, shape=(64,), seed=2)
        for meta, data in ((good, blob), (bad, bad_blob), (later, later_blob)):
            spool.write(meta, data)
        password = Path(section["password_file"]).read_text()
        credentials = DownloadPolicy(username=agent_id, password=password).headers()
        uploader = Uploader(spool, UploadTarget(cloud.url, credentials, backoff_s=0.05))
        uploader.start()
        try:
            wait_for(lambda: spool.depth() == 0, "an empty spool")
        finally:
            uploader.stop()
        arrived = {s["id"] for s in samples(cloud, agent_id=agent_id)}
    assert arrived == {good.id, later.id}
    assert uploader.counters.refused == 1
    assert uploader.counters.uploaded == {"spindle-vibration": 2}
    assert uploader.counters.bytes_uploaded["spindle-vibration"] == len(blob) + len(later_blob)
