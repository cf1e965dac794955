"""`aiot demo`: the whole platform on one laptop, on embedded defaults.

A local broker (Mosquitto, else embedded amqtt), the cloud API with its ingest worker on
SQLite, and one edge agent whose simulated machine develops a fault every 20 seconds.
The terminal shows what a dashboard would: the agent's state and counters and the events
as the cloud stores them, read from the public REST API with an admin key made at start.
With Mosquitto the broker authenticates like production (``aiot cloud broker-config``): the
agent and the ingest worker log in with their own credentials and ACLs; the embedded amqtt
fallback stays anonymous.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.broker import MosquittoProcess, free_port, local_broker

FAULT_EVERY_S = 20.0
FAULT_LASTS_S = 6.0
OBJECT_EVERY_S = 12.0
SUMMARY_EVERY_S = 10.0
DEMO_AGENT = "demo-press-1"


def demo_agent_config(*, broker_url: str, protocol: str, workdir: Path, hours: float) -> str:
    """The demo agent's YAML: a vibration pipeline with a fault every FAULT_EVERY_S seconds, and
    a camera on a synthetic street where a car or a person crosses a stop line now and then."""
    import models
    from edge_agent.sources.simulated_machine import FAULTS

    manifest = Path(models.__file__).resolve().parent / "manifest.json"
    faults = []
    for i in range(int(hours * 3600 / FAULT_EVERY_S)):
        at = 8.0 + i * FAULT_EVERY_S
        fault = FAULTS[i % len(FAULTS)]
        faults.append(f"        - {{at_s: {at}, duration_s: {FAULT_LASTS_S}, fault: {fault}}}")
    schedule = "\n".join(faults)
    seconds = hours * 3600
    return f"""\
# Written by `aiot demo`; see deploy/edge.example.yaml for every key.
agent_id: {DEMO_AGENT}
mqtt:
  url: {broker_url}
  protocol: "{protocol}"
  heartbeat_s: 2
outbox:
  path: {workdir / "outbox.db"}
pipelines:
  - name: spindle-vibration
    source:
      type: simulated_vibration
      seed: 7
      speed: 1.0
      schedule:
{schedule}
    model:
      name: vibration-anomaly
      manifest: {manifest}
    filters:
      - {{type: threshold, threshold: 0.8}}
      - {{type: debounce, n: 3, m: 4}}
    summary_interval_s: {SUMMARY_EVERY_S}
  - name: intersection
    source:
      type: synthetic_scene
      fps: 5
      speed: 1.0
      seed: 5
      duration_s: {seconds}
      random_actors: {int(seconds / OBJECT_EVERY_S)}
    model:
      name: scene-detector
      manifest: {manifest}
    vision:
      tracking:
        lines: [{{name: stop-line, a: [320, 0], b: [320, 360]}}]
      thumbnails: {workdir / "thumbnails"}
    summary_interval_s: {SUMMARY_EVERY_S}
"""


def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 8000,
) -> None:
    """Run broker, cloud API and an edge agent together, and show the live event feed."""
    import uvicorn
    from rich.console import Console

    from cloud_api.auth import create_api_key
    from cloud_api.config import Settings
    from cloud_api.main import create_app
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="aiot-demo-"))
    api_port = port or free_port()
    database_url = f"sqlite:///{workdir / 'aiot.db'}"
    broker = local_broker(workdir)
    ingest_url = agent_url = broker.url
    if isinstance(broker, MosquittoProcess):
        ingest_url, agent_url = _authenticated_broker(broker, database_url, workdir)
    broker.start()
    settings = Settings(
        database_url=database_url,
        mqtt_url=ingest_url,
        mqtt_protocol=broker.protocol,
        data_dir=workdir,
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, name="api", daemon=True)
    api_thread.start()
    api_url = f"http://127.0.0.1:{api_port}"
    config_path = workdir / "edge.yaml"
    hours = (duration or 24 * 3600) / 3600
    config_path.write_text(
        demo_agent_config(
            broker_url=agent_url, protocol=broker.protocol, workdir=workdir, hours=hours
        )
    )
    agent = Agent(load_config(config_path))
    while not server.started:
        time.sleep(0.05)
    agent.start()
    with app.state.sessionmaker() as session:
        _, admin_key = create_api_key(session, name="demo-admin", scope="admin")
    console.print(f"[bold]API[/] {api_url}  (OpenAPI: {api_url}/docs)")
    console.print(f"[bold]Admin key[/] {admin_key}  (Authorization: Bearer ...)")
    access = "per-agent credentials and ACLs" if agent_url != broker.url else "anonymous"
    console.print(f"[bold]Broker[/] {broker.url}  ({broker.name}, {access})")
    console.print(f"[bold]Data[/] {workdir}  (SQLite, outbox, agent config edge.yaml)")
    console.print(
        f"A machine fault every {FAULT_EVERY_S:.0f} s, a car or a person every "
        f"~{OBJECT_EVERY_S:.0f} s; Ctrl-C stops everything.\n"
    )
    try:
        _show_live(console, api_url, admin_key, duration)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        agent.stop()
        server.should_exit = True
        api_thread.join(timeout=10)
        broker.stop()
    console.print(f"\nstopped; data kept in {workdir}")


def _authenticated_broker(
    broker: MosquittoProcess, database_url: str, workdir: Path
) -> tuple[str, str]:
    """Credentials for the ingest worker and the agent, and the broker's files from them.

    Returns the MQTT URLs (with user and password) of the ingest worker and of the agent.
    """
    from cloud_api.broker_config import write_broker_config
    from cloud_api.credentials import create_broker_user, enroll_agent
    from cloud_api.db import create_db_engine, create_sessionmaker, migrate

    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        with create_sessionmaker(engine)() as session:
            _, ingest_password, _ = create_broker_user(session, username="ingest", role="ingest")
            _, agent_password = enroll_agent(session, agent_id=DEMO_AGENT, labels={"demo": "1"})
            write_broker_config(session, workdir / "broker")
    finally:
        engine.dispose()
    broker.allow_anonymous = False
    broker.extra_config += (
        f"password_file {workdir / 'broker' / 'passwd'}\nacl_file {workdir / 'broker' / 'acl'}\n"
    )
    address = f"127.0.0.1:{broker.port}"
    return (
        f"mqtt://ingest:{ingest_password}@{address}",
        f"mqtt://{DEMO_AGENT}:{agent_password}@{address}",
    )


def _show_live(console: Any, api_url: str, api_key: str, duration: float | None) -> None:
    import httpx
    from rich.live import Live

    deadline = time.monotonic() + duration if duration is not None else float("inf")
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        httpx.Client(base_url=api_url, timeout=5, headers=headers) as client,
        Live(console=console, refresh_per_second=2) as live,
    ):
        while time.monotonic() < deadline:
            events = client.get("/api/v1/events", params={"limit": 12}).json()["items"]
            agents = client.get("/api/v1/agents").json()
            bandwidth = client.get("/api/v1/stats/bandwidth").json()
            live.update(_render(events, agents, bandwidth))
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _render(events: list[dict[str, Any]], agents: Any, bandwidth: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    fleet = Table(title="Agents (GET /api/v1/agents)", expand=True)
    for column in ("agent", "state", "pipeline", "model", "samples", "events out", "outbox"):
        fleet.add_column(column)
    for agent in agents:
        for pipeline in agent["pipelines"] or [{}]:
            model = pipeline.get("model") or {}
            fleet.add_row(
                agent["agent_id"],
                f"{agent['state']} ({agent['reason']})" if agent["reason"] else agent["state"],
                pipeline.get("name", "-"),
                f"{model.get('name', '-')} {model.get('version', '')}",
                str(pipeline.get("samples_in", "-")),
                str(pipeline.get("events_out", "-")),
                str(agent["outbox_depth"]),
            )
    feed = Table(title="Events in the cloud (GET /api/v1/events)", expand=True)
    for column in ("time", "agent", "pipeline", "kind", "state", "label", "score", "model"):
        feed.add_column(column)
    for event in events:
        feed.add_row(
            event["ts"][11:23],
            event["agent_id"],
            event["pipeline"],
            event["kind"],
            event["state"],
            event["label"],
            f"{event['score']:.2f}",
            f"{event['model_name']} {event['model_version']}",
        )
    saved = Table(title="What the edge saved (GET /api/v1/stats/bandwidth)", expand=True)
    for column in ("pipeline", "read at the edge", "sent to the cloud", "sent / read"):
        saved.add_column(column)
    for row in bandwidth["pipelines"]:
        ratio = f"{row['ratio']:.4%}" if row["ratio"] is not None else "-"
        saved.add_row(row["pipeline"], _size(row["raw_bytes"]), _size(row["sent_bytes"]), ratio)
    return Group(fleet, saved, feed)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
