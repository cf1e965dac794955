"""Model rollouts end to end: 5 real agents, a real broker, the real API served over HTTP.

The agents are ``edge_agent.agent.Agent`` objects in this process (their own MQTT clients,
outboxes, ORT sessions and updaters), configured with the cloud's API URL and public key; the
API runs in uvicorn on a free port, because agents download artifacts over HTTP. Each
pipeline makes one event per window, so the events show which model ran every window.

One story, in order, on the same fleet: a canary rollout of a new version that reaches every
agent; a tampered artifact that the canary refuses; a version that fails at inference and is
rolled back. ``aiot deploy --wait`` drives the first and its exit code is checked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app as cli_app
from cli.server import serve_in_thread
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.model_fixtures import MODEL_NAME, SHIPPED_MODEL, write_nan_model, write_same_model
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

PIPELINE = "spindle-vibration"
AGENTS = 5
TIMEOUT_S = 120.0
EVERY_WINDOW = [
    {"type": "threshold", "threshold": -1},
    {"type": "report_interval", "max_s": 0.001},
]
"""Filters that make one event per window, so every window shows which model ran it."""
LABELS = ["healthy", "imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race",
          "impact"]  # fmt: skip


def wait_for(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return result


@dataclass
class Cloud:
    url: str
    http: httpx.Client
    """A client with an admin key."""
    settings: Settings
    key: str


@contextmanager
def serve(settings: Settings) -> Iterator[Cloud]:
    """The real app in uvicorn on a free port (in a thread), and a client with an admin key."""
    app = create_app(settings)
    with serve_in_thread(app) as url:
        with app.state.sessionmaker() as session:
            _, key = create_api_key(session, name="rollout-test", scope="admin")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=30.0, headers=headers) as http:
            yield Cloud(url, http, settings, key)


def agent_config(
    agent_id: str,
    *,
    cloud: Cloud,
    broker: Mosquitto,
    workdir: Path,
    filters: list[dict[str, Any]] | None = EVERY_WINDOW,
    summary_interval_s: float = 0,
) -> AgentConfig:
    """An enrolled agent: it downloads artifacts with its own credentials (HTTP Basic).
    ``filters`` None: the pipeline's default chain."""
    enrolled = cloud.http.post("/api/v1/agents", json={"agent_id": agent_id})
    assert enrolled.status_code == 201, enrolled.text
    credentials = enrolled.json()
    password_file = workdir / agent_id / "password"
    password_file.parent.mkdir(parents=True)
    password_file.write_text(credentials["password"])
    cloud_section = {
        "api_url": cloud.url,
        "public_key": credentials["public_key"]["public_key"],
        "username": credentials["username"],
        "password_file": str(password_file),
    }
    return AgentConfig.model_validate(
        {
            "agent_id": agent_id,
            "mqtt": {"url": broker.url, "heartbeat_s": 1.0},
            "outbox": {"path": str(workdir / agent_id / "outbox.db"), "batch_max_events": 20},
            "cloud": cloud_section,
            "updates": {"health_window_s": 1.5, "retry_backoff_s": 0.1, "retries": 2},
            "pipelines": [
                {
                    "name": PIPELINE,
                    "source": {"type": "simulated_vibration", "seed": 5, "speed": 1.0},
                    "model": {
                        "name": MODEL_NAME,
                        "path": str(SHIPPED_MODEL),
                        "version": "1.0.0",
                        "labels": LABELS,
                        "normal_label": "healthy",
                    },
                    **({"filters": filters} if filters is not None else {}),
                    "summary_interval_s": summary_interval_s,
                }
            ],
        }
    )


@pytest.fixture
def platform(
    database_url: str, broker: Mosquitto, tmp_path: Path
) -> Iterator[tuple[Cloud, list[Agent]]]:
    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=tmp_path / "cloud",
        ingest_client_id=f"ingest-{tmp_path.name}"[:64], ingest_flush_s=0.02,
        rollout_tick_s=0.1, heartbeat_grace=5.0,
    )  # fmt: skip
    with serve(settings) as cloud:
        run = uuid.uuid4().hex[:8]
        ids = [f"roll-{run}-{i}" for i in range(AGENTS)]
        configs = [agent_config(a, cloud=cloud, broker=broker, workdir=tmp_path) for a in ids]
        with running(cloud, configs) as agents:
            yield cloud, agents


@contextmanager
def running(cloud: Cloud, configs: list[AgentConfig]) -> Iterator[list[Agent]]:
    """The agents started and online in the cloud; stopped on the way out."""
    agents = [Agent(config) for config in configs]
    try:
        for agent in agents:
            agent.start()
        for config in configs:
            agent_id = config.agent_id
            wait_for(lambda a=agent_id: online(cloud, a), f"{agent_id} online")  # type: ignore[misc]
        yield agents
    finally:
        for agent in agents:
            agent.stop()


def online(cloud: Cloud, agent_id: str) -> bool:
    response = cloud.http.get(f"/api/v1/agents/{agent_id}")
    return response.status_code == 200 and response.json()["state"] == "online"


def running_version(cloud: Cloud, agent_id: str) -> str:
    (pipeline,) = cloud.http.get(f"/api/v1/agents/{agent_id}").json()["pipelines"]
    version: str = pipeline["model"]["version"]
    return version


def register(cloud: Cloud, version: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        response = cloud.http.post(
            f"/api/v1/models/{MODEL_NAME}/versions",
            data={"version": version, "task": "anomaly", "labels": ",".join(LABELS)},
            files={"file": (path.name, file, "application/octet-stream")},
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def deploy(cloud: Cloud, version: str, agent_ids: list[str]) -> int:
    response = cloud.http.post(
        "/api/v1/deployments",
        json={"model": MODEL_NAME, "version": version, "pipeline": PIPELINE,
              "target": {"agent_ids": agent_ids},
              "strategy": {"canary_fraction": 0.2, "canary_healthy_s": 1.0,
                           "agent_timeout_s": 60.0, "quality": None}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    deployment_id: int = response.json()["id"]
    return deployment_id


def deployment(cloud: Cloud, deployment_id: int) -> dict[str, Any]:
    body: dict[str, Any] = cloud.http.get(f"/api/v1/deployments/{deployment_id}").json()
    return body


def ended(cloud: Cloud, deployment_id: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        body = deployment(cloud, deployment_id)
        return body if body["state"] in ("succeeded", "halted", "cancelled") else None

    return check


def window_events(cloud: Cloud, agent_id: str) -> list[dict[str, Any]]:
    """Every stored event of the agent, in seq order (one per window), page by page."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"agent_id": agent_id, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = cloud.http.get("/api/v1/events", params=params).json()
        events += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return sorted(events, key=lambda e: e["seq"])


def contiguous_with_new_tail(
    cloud: Cloud, agent_id: str, new: str, tail: int
) -> list[dict[str, Any]] | None:
    """The agent's events once their seqs run from 0 without a gap and the last ``tail`` ran
    ``new``; None while some are still on the way (a lost window would never arrive)."""
    events = window_events(cloud, agent_id)
    seqs = [e["seq"] for e in events]
    if seqs != list(range(len(seqs))) or len(events) < tail:
        return None
    if any(e["model_version"] != new for e in events[-tail:]):
        return None
    return events


def test_canary_rollout_then_tampered_and_failing_versions(
    platform: tuple[Cloud, list[Agent]], tmp_path: Path
) -> None:
    cloud, agents = platform
    ids = sorted(agent.config.agent_id for agent in agents)
    canary, rest = ids[0], ids[1:]

    # 1. A new version, 20 % canary: one agent first, then the four others.
    register(cloud, "1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    # Before the deployment starts, note when a rest agent first moves and what the canary
    # said then; the CLI polls in this thread, so a watcher thread does the noting.
    seen_rest_moving: list[dict[str, Any]] = []
    stop_watching = threading.Event()

    def watch_order() -> None:
        with httpx.Client(base_url=cloud.url, timeout=30.0, headers=cloud.http.headers) as http:
            while not stop_watching.wait(0.05):
                listed = http.get("/api/v1/deployments", params={"limit": 1}).json()
                if not listed:
                    continue
                agents_now = {a["agent_id"]: a for a in listed[0]["agents"]}
                if any(agents_now[a]["state"] != "pending" for a in rest):
                    seen_rest_moving.append(agents_now[canary])
                    return

    watcher = threading.Thread(target=watch_order)
    watcher.start()
    try:
        result = CliRunner().invoke(
            cli_app,
            ["deploy", MODEL_NAME, "1.1.0", "--pipeline", PIPELINE, "--canary", "0.2",
             "--healthy-s", "1", "--agent-timeout-s", "60", "--no-quality-gate",
             *(f"--agent={a}" for a in ids),
             "--api", cloud.url, "--wait", "--poll-s", "0.2"],
            env={"AIOT_API_KEY": cloud.key},
        )  # fmt: skip
    finally:
        stop_watching.set()
        watcher.join()
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    (first,) = cloud.http.get("/api/v1/deployments").json()
    assert first["state"] == "succeeded"
    assert [(a["agent_id"], a["phase"]) for a in first["agents"]] == [
        (canary, "canary"), *((a, "rest") for a in rest),
    ]  # fmt: skip
    assert first["counts"]["healthy"] == AGENTS
    # The rest moved only once the canary ran the new version, healthy.
    assert seen_rest_moving, "no rest agent was ever seen moving"
    assert seen_rest_moving[0]["state"] == "healthy"
    assert seen_rest_moving[0]["running_version"] == "1.1.0"
    for agent_id in ids:
        assert running_version(cloud, agent_id) == "1.1.0"
        events = wait_for(
            lambda a=agent_id: contiguous_with_new_tail(cloud, a, "1.1.0", tail=10),  # type: ignore[misc]
            f"{agent_id}'s events contiguous from seq 0 and on 1.1.0",
        )
        versions = [e["model_version"] for e in events]
        swap = versions.index("1.1.0")
        # Every window before the swap ran 1.0.0, every window after it 1.1.0, none lost.
        assert swap > 0
        assert set(versions[:swap]) == {"1.0.0"}
        assert set(versions[swap:]) == {"1.1.0"}

    # 2. A tampered artifact: the canary refuses it and keeps running 1.1.0.
    register(cloud, "1.2.0", write_same_model(tmp_path / "v120.onnx", "1.2.0"))
    stored = cloud.settings.data_dir / "artifacts" / MODEL_NAME / "1.2.0" / "model.onnx"
    stored.write_bytes(write_same_model(tmp_path / "evil.onnx", "6.6.6").read_bytes())
    tampered = deploy(cloud, "1.2.0", ids)
    halted = wait_for(ended(cloud, tampered), "the tampered deployment to end")
    assert halted["state"] == "halted"
    assert halted["reason"].startswith(f"canary {canary} failed: ")
    assert "sha256" in halted["reason"] or "size" in halted["reason"], halted["reason"]
    canary_row = next(a for a in halted["agents"] if a["agent_id"] == canary)
    assert (canary_row["state"], canary_row["running_version"]) == ("failed", "1.1.0")
    assert {a["state"] for a in halted["agents"] if a["agent_id"] != canary} == {"cancelled"}
    assert running_version(cloud, canary) == "1.1.0"

    # 3. A version that fails at inference: swapped, rolled back by the agent, halted.
    register(cloud, "1.3.0", write_nan_model(tmp_path / "v130.onnx", "1.3.0"))
    failing = deploy(cloud, "1.3.0", ids)
    halted = wait_for(ended(cloud, failing), "the failing deployment to end")
    assert halted["state"] == "halted"
    assert halted["reason"].startswith(f"canary {canary} rolled_back: ")
    assert "inference errors" in halted["reason"], halted["reason"]
    canary_row = next(a for a in halted["agents"] if a["agent_id"] == canary)
    assert canary_row["state"] == "rolled_back"
    wait_for(lambda: running_version(cloud, canary) == "1.1.0", "the canary back on 1.1.0")
    for agent_id in rest:
        assert running_version(cloud, agent_id) == "1.1.0"  # the rest were never touched
