"""`aiot demo --scenario drift`: the closed loop on one laptop, measured.

A local broker, the cloud API (its ingest, rollout and training workers) on SQLite and one
edge agent whose simulated spindle drifts to a new shaft speed; ``cli/drift_operator.py``
then acts as the operator through REST (feedback, a training job, a shadow deployment
promoted into a canary and rolled out) and the rates before and after are printed with each
step's duration. ``drift_platform`` is the same assembly for the drift benchmark.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cli.drift_loop import COLLECT, MODEL, DriftScenario, LoopResult
from cli.drift_operator import DriftOperator, run_loop

PIPELINE = "spindle-vibration"
LABELS = ["healthy", "imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race",
          "impact"]  # fmt: skip
DEMO_SCENARIO = DriftScenario(speed=4.0)
"""The demo's machine runs four times faster than real time, so the loop takes minutes."""


def shipped_model() -> Path:
    import models

    return Path(models.__file__).resolve().parent / f"{MODEL}-1.0.0.onnx"


def drift_agent_config(
    agent_id: str, *, broker_url: str, workdir: Path, cloud: dict[str, Any],
    scenario: DriftScenario,
) -> dict[str, Any]:  # fmt: skip
    """An agent with one vibration pipeline on the shipped model: the drifting spindle, its
    alarms' windows collected, updates from ``cloud`` (``api_url``, key, credentials)."""
    return {
        "agent_id": agent_id,
        "mqtt": {"url": broker_url, "heartbeat_s": 1.0},
        "outbox": {"path": str(workdir / agent_id / "outbox.db"), "batch_max_events": 50},
        "metrics": {"port": 0},
        "cloud": cloud,
        "updates": {"health_window_s": 2.0},
        "pipelines": [
            {
                "name": PIPELINE,
                "source": scenario.source(),
                "model": {
                    "name": MODEL,
                    "path": str(shipped_model()),
                    "version": "1.0.0",
                    "labels": LABELS,
                    "normal_label": "healthy",
                },
                "collect": COLLECT,
                "summary_interval_s": 1.0,
            }
        ],
    }


def register_shipped(http: Any) -> None:
    """The shipped model as the registry's 1.0.0, the version the agent starts on."""
    with shipped_model().open("rb") as file:
        response = http.post(
            f"/api/v1/models/{MODEL}/versions",
            data={"version": "1.0.0", "task": "anomaly", "labels": ",".join(LABELS)},
            files={"file": ("model.onnx", file, "application/octet-stream")},
        )
    response.raise_for_status()


def enroll(http: Any, agent_id: str, workdir: Path, api_url: str) -> dict[str, Any]:
    """Enroll ``agent_id``; its ``cloud:`` section (the password in a 0600 file)."""
    enrolled = http.post("/api/v1/agents", json={"agent_id": agent_id})
    enrolled.raise_for_status()
    credentials = enrolled.json()
    password_file = workdir / agent_id / "password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.touch(mode=0o600)
    password_file.write_text(credentials["password"])
    return {"api_url": api_url, "public_key": credentials["public_key"]["public_key"],
            "username": credentials["username"], "password_file": str(password_file)}  # fmt: skip


@contextlib.contextmanager
def drift_platform(
    scenario: DriftScenario, say: Callable[[str], None], workdir: Path | None = None
) -> Iterator[DriftOperator]:
    """Broker, API (on SQLite in ``workdir``) and the drifting agent, started; the operator."""
    import httpx

    from cli.broker import free_port, local_broker
    from cli.server import serve_in_thread
    from cloud_api.auth import create_api_key
    from cloud_api.config import Settings
    from cloud_api.main import create_app
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig

    workdir = workdir or Path(tempfile.mkdtemp(prefix="aiot-drift-"))
    broker = local_broker(workdir)
    broker.start()
    try:
        settings = Settings(
            database_url=f"sqlite:///{workdir / 'aiot.db'}", mqtt_url=broker.url,
            mqtt_protocol=broker.protocol, data_dir=workdir / "cloud", ingest_flush_s=0.05,
            rollout_tick_s=0.2, training_poll_s=0.5,
        )  # fmt: skip
        app = create_app(settings)
        with serve_in_thread(app, port=free_port()) as url:
            with app.state.sessionmaker() as session:
                _, key = create_api_key(session, name="drift-operator", scope="admin")
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=url, timeout=60.0, headers=headers) as http:
                register_shipped(http)
                agent_id = f"drift-{uuid.uuid4().hex[:6]}"
                cloud = enroll(http, agent_id, workdir, url)
                config = drift_agent_config(agent_id, broker_url=broker.url, workdir=workdir,
                                            cloud=cloud, scenario=scenario)  # fmt: skip
                agent = Agent(AgentConfig.model_validate(config))
                t0 = time.time()
                agent.start()
                try:
                    say(f"API {url}  admin key {key}  data {workdir}")
                    yield DriftOperator(http, agent_id, PIPELINE, scenario, t0=t0, say=say)
                finally:
                    agent.stop()
    finally:
        broker.stop()


def demo_drift(say: Callable[[str], None]) -> LoopResult:
    """The demo's drift scenario, printed as it goes; what it measured."""
    with drift_platform(DEMO_SCENARIO, say) as operator:
        result = run_loop(operator)
    for line in result.lines():
        say(line)
    return result
