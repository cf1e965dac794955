"""Rollout: seconds from ``POST /api/v1/deployments`` to 20 agents running the new version.

Everything is real except the sensors: the API (uvicorn, SQLite, its ingest and rollout
workers at their default 1 s tick) on a local Mosquitto, and 20 ``edge_agent.agent.Agent``
objects in this process, each with a simulated vibration source in real time, its own MQTT
client, outbox, ORT session and updater (download over HTTP, verify, load, self-test, swap,
a health window). The clock stops when every agent's updater says ``running``.

The baseline is the lower bound the strategy sets: the canary's health window, the time the
canary must stay healthy, then the rest's health window. The ratio is the overhead factor.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx

import models
from bench.result import Goal, Result
from cli.broker import MosquittoProcess
from cli.server import serve_in_thread
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from models.release import write_release

AGENTS = 20
ROUNDS = 3
PIPELINE = "spindle-vibration"
MODEL = "vibration-anomaly"
SHIPPED = Path(models.__file__).resolve().parent / "vibration-anomaly-1.0.0.onnx"
LABELS = ["healthy", "imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race",
          "impact"]  # fmt: skip
HEALTH_WINDOW_S = 1.0
CANARY_HEALTHY_S = 1.0
TIMEOUT_S = 300.0
GOAL_TICKS = 3
"""The goal: a few rollout ticks over the bound the strategy sets."""


@contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, str]]:
    """The real app in uvicorn on a free port, in a thread; yields its URL and an admin key."""
    app = create_app(settings)
    with serve_in_thread(app) as url, app.state.sessionmaker() as session:
        yield url, create_api_key(session, name="bench-rollout", scope="admin")[1]


def agent_config(
    agent_id: str, *, http: httpx.Client, api: str, broker: str, workdir: Path
) -> AgentConfig:
    """An enrolled agent: it downloads artifacts with its own credentials."""
    enrolled = http.post("/api/v1/agents", json={"agent_id": agent_id})
    enrolled.raise_for_status()
    credentials = enrolled.json()
    password_file = workdir / agent_id / "password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(credentials["password"])
    return AgentConfig.model_validate(
        {
            "agent_id": agent_id,
            "mqtt": {"url": broker, "heartbeat_s": 2.0},
            "outbox": {"path": str(workdir / agent_id / "outbox.db")},
            "cloud": {
                "api_url": api,
                "public_key": credentials["public_key"]["public_key"],
                "username": credentials["username"],
                "password_file": str(password_file),
            },
            "updates": {"health_window_s": HEALTH_WINDOW_S},
            "pipelines": [
                {
                    "name": PIPELINE,
                    "source": {"type": "simulated_vibration", "seed": 1, "speed": 1.0},
                    "model": {
                        "name": MODEL,
                        "path": str(SHIPPED),
                        "version": "1.0.0",
                        "labels": LABELS,
                        "normal_label": "healthy",
                    },
                    "summary_interval_s": 0,
                }
            ],
        }
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark timed out waiting for {what}")
        time.sleep(0.02)


def reporting_pipeline(http: httpx.Client, agent_ids: list[str]) -> bool:
    """Whether the cloud has a status from each agent that lists ``PIPELINE``: until then
    ``POST /api/v1/deployments`` refuses them (422, "agents do not report a pipeline")."""
    response = http.get("/api/v1/agents")
    response.raise_for_status()
    reporting = {
        agent["agent_id"]
        for agent in response.json()
        if any(p["name"] == PIPELINE for p in agent["pipelines"])
    }
    return reporting.issuperset(agent_ids)


def rollout_seconds(http: httpx.Client, agents: list[Agent], version: str, workdir: Path) -> float:
    """Register ``version``, deploy it to every agent and time until all of them run it."""
    release = write_release(SHIPPED, workdir / f"{version}.onnx", name=MODEL, version=version)
    with release.open("rb") as file:
        http.post(
            f"/api/v1/models/{MODEL}/versions",
            data={"version": version, "task": "anomaly", "labels": ",".join(LABELS)},
            files={"file": ("model.onnx", file, "application/octet-stream")},
        ).raise_for_status()
    body = {
        "model": MODEL, "version": version, "pipeline": PIPELINE,
        "target": {"agent_ids": [a.config.agent_id for a in agents]},
        # The same weights under a new number: the gate would only add the wait for summaries.
        "strategy": {"canary_fraction": 0.2, "canary_healthy_s": CANARY_HEALTHY_S,
                     "agent_timeout_s": 120.0, "quality": None},
    }  # fmt: skip

    def all_running() -> bool:
        for agent in agents:
            assert agent.updater is not None
            status = agent.updater.status(PIPELINE)
            if status is None or (status.version, status.state) != (version, "running"):
                return False
        return True

    start = time.perf_counter()
    response = http.post("/api/v1/deployments", json=body)
    response.raise_for_status()
    wait_for(all_running, f"{AGENTS} agents running {version}")
    elapsed = time.perf_counter() - start
    deployment_id = response.json()["id"]
    # The cloud sees it too (one more status and tick later), and nothing failed on the way.
    wait_for(
        lambda: http.get(f"/api/v1/deployments/{deployment_id}").json()["state"] == "succeeded",
        f"deployment {deployment_id} to succeed",
    )
    return elapsed


def bench_rollout() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-rollout-"))
    broker = MosquittoProcess(workdir)
    broker.start()
    # The agents and the API log every state change; the table is what this run shows.
    logging.getLogger("edge_agent").setLevel(logging.WARNING)
    logging.getLogger("cloud_api").setLevel(logging.WARNING)
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'cloud.db'}", mqtt_url=broker.url,
        data_dir=workdir / "cloud", ingest_client_id=f"bench-ingest-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    agents: list[Agent] = []
    times: list[float] = []
    try:
        with (
            serve(settings) as (api, admin_key),
            httpx.Client(
                base_url=api, timeout=60.0, headers={"Authorization": f"Bearer {admin_key}"}
            ) as http,
        ):
            agents = [
                Agent(
                    agent_config(
                        f"bench-{i:02d}", http=http, api=api, broker=broker.url, workdir=workdir
                    )
                )
                for i in range(AGENTS)
            ]
            for agent in agents:
                agent.start()
            # Enrolment lists an agent at once; a deployment needs its pipeline in a status.
            wait_for(
                partial(reporting_pipeline, http, [a.config.agent_id for a in agents]),
                f"every agent to report pipeline {PIPELINE!r}",
            )
            for round_ in range(ROUNDS):
                times.append(rollout_seconds(http, agents, f"1.{round_ + 1}.0", workdir))
    finally:
        for agent in agents:
            agent.stop()
        broker.stop()
    bound = 2 * HEALTH_WINDOW_S + CANARY_HEALTHY_S
    return [
        Result(
            name=f"rollout POST -> {AGENTS} agents running (20 % canary)",
            value=statistics.median(times), unit="s", baseline=bound,
            baseline_name="2 health windows + canary hold",
            goal=Goal.value("<=", bound + GOAL_TICKS * settings.rollout_tick_s),
            details={"rounds": ROUNDS, "min_s": round(min(times), 2),
                     "max_s": round(max(times), 2), "tick_s": settings.rollout_tick_s,
                     "health_window_s": HEALTH_WINDOW_S, "canary_healthy_s": CANARY_HEALTHY_S},
        )
    ]  # fmt: skip
