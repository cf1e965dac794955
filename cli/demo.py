"""`aiot demo`: the whole platform on one laptop, on embedded defaults.

A local broker (Mosquitto, else embedded amqtt), the cloud API with its ingest worker on
SQLite, and one edge agent whose simulated machine develops a fault every 20 seconds, whose
camera watches a synthetic street, which polls a simulated press over Modbus TCP and
replays a real water-flow recording (``demo_sensors.py``).
The terminal shows what a dashboard would: the agent's state and counters and the events
as the cloud stores them, read from the public REST API with an admin key made at start.
After ROLLOUT_AFTER_S seconds the demo acts as an operator: it registers the vibration model
again as version 1.1.0 and deploys it to the agent (``POST /api/v1/deployments``); the agent
downloads it with its own credentials, verifies the signature, self-tests, swaps it in between
two inferences and, after its health window, reports it running. The live view shows each step.
With Mosquitto the broker authenticates like production (``aiot cloud broker-config``): the
agent and the ingest worker log in with their own credentials and ACLs; the embedded amqtt
fallback stays anonymous.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.broker import MosquittoProcess, free_port, local_broker
from cli.demo_sensors import (
    PRESS_FAULT_EVERY_S,
    DemoSensors,
    sensor_pipelines_yaml,
    start_sensors,
)
from cli.demo_view import show_live
from cli.server import serve_in_thread
from cli.signals import interrupt_on_stop_signals
from cli.startup import ensure_port_free

FAULT_EVERY_S = 20.0
FAULT_LASTS_S = 6.0
OBJECT_EVERY_S = 12.0
SUMMARY_EVERY_S = 10.0
DEMO_AGENT = "demo-press-1"
ROLLOUT_AFTER_S = 30.0
ROLLOUT_VERSION = "1.1.0"
VIBRATION_PIPELINE = "spindle-vibration"
VIBRATION_LABELS = ["healthy", "imbalance", "misalignment", "bearing_outer_race",
                    "bearing_inner_race", "impact"]  # fmt: skip


def demo_agent_config(
    *, broker_url: str, protocol: str, workdir: Path, hours: float, cloud: str = "",
    sensors: str = "", password_file: Path | None = None,
) -> str:  # fmt: skip
    """The demo agent's YAML: a vibration pipeline (a fault every FAULT_EVERY_S s; it collects and
    escalates), a camera on a synthetic street; ``cloud``: the ``cloud:`` and ``updates:`` YAML,
    ``sensors`` more pipelines (``demo_sensors.py``), ``password_file`` the broker password's."""
    import models
    from edge_agent.sources.machine_physics import FAULTS

    manifest = Path(models.__file__).resolve().parent / "manifest.json"
    faults = []
    for i in range(int(hours * 3600 / FAULT_EVERY_S)):
        at = 8.0 + i * FAULT_EVERY_S
        fault = FAULTS[i % len(FAULTS)]
        faults.append(f"        - {{at_s: {at}, duration_s: {FAULT_LASTS_S}, fault: {fault}}}")
    schedule = "\n".join(faults) or "        []"  # a demo shorter than one fault has none
    seconds = hours * 3600
    login = f"  password_file: {password_file}\n" if password_file else ""
    return f"""\
# Written by `aiot demo`; see deploy/edge.example.yaml for every key.
agent_id: {DEMO_AGENT}
mqtt:
  url: {broker_url}
{login}  protocol: "{protocol}"
  heartbeat_s: 2
outbox:
  path: {workdir / "outbox.db"}
{cloud}pipelines:
  - name: {VIBRATION_PIPELINE}
    source:
      type: simulated_vibration
      seed: 7
      speed: 1.0
      schedule:
{schedule}
    model:
      name: vibration-anomaly
      manifest: {manifest}
    filters: [{{type: threshold, threshold: 0.8}}, {{type: debounce, n: 3, m: 4}}]
    collect: {{random_share: 0.01, band: [0.3, 0.8], max_per_minute: 30}}
    escalate: {{band: [0.3, 0.8], budget_per_min: 30}}
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
{sensors}"""


def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 8000,
    scenario: Annotated[
        str, typer.Option(help="live (the live view) or drift (the closed loop, measured).")
    ] = "live",
) -> None:
    """Run broker, cloud API and an edge agent together, and show the live event feed.

    SIGTERM and Ctrl-C stop it the same way: the agent, the API, the press, then the broker.
    """
    from rich.console import Console

    console = Console()
    if scenario not in ("live", "drift"):
        raise typer.BadParameter(f"{scenario!r}: expected live or drift", param_hint="--scenario")
    if scenario == "drift":
        from cli.demo_drift import demo_drift

        with interrupt_on_stop_signals(), contextlib.suppress(KeyboardInterrupt):
            demo_drift(lambda line: console.print(line, markup=False, highlight=False))
        return
    ensure_port_free("127.0.0.1", port, option="--port")
    platform: _Platform | None = None
    with interrupt_on_stop_signals(), contextlib.suppress(KeyboardInterrupt):
        platform = _assemble(port or free_port(), duration)
        try:
            _run(console, platform, duration)
        finally:
            platform.sensors.press.stop()
            platform.broker.stop()
    where = f"; data kept in {platform.workdir}" if platform is not None else ""
    console.print(f"\nstopped{where}")


@dataclass(frozen=True)
class _Platform:
    """The demo's parts, assembled and not started yet (the broker already is)."""

    workdir: Path
    broker: Any
    agent_url: str
    app: Any
    api_port: int
    agent: Any
    sensors: DemoSensors

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def _assemble(api_port: int, duration: float | None) -> _Platform:
    """Broker (started), database, cloud app and agent, wired as an operator would."""
    from cloud_api.config import Settings
    from cloud_api.main import create_app
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    workdir = Path(tempfile.mkdtemp(prefix="aiot-demo-"))
    database_url = f"sqlite:///{workdir / 'aiot.db'}"
    broker = local_broker(workdir)
    credentials = _prepare_cloud(
        database_url, workdir, broker_auth=isinstance(broker, MosquittoProcess)
    )
    ingest_url = control_url = agent_url = broker.url
    secrets = isinstance(broker, MosquittoProcess)
    if isinstance(broker, MosquittoProcess):
        ingest_url, control_url, agent_url = _authenticate_broker(broker, credentials, workdir)
    broker.start()
    sensors: DemoSensors | None = None
    try:  # anything failing from here on must not leave the broker or the press running
        sensors = start_sensors(workdir, free_port())
        settings = Settings(
            database_url=database_url,
            mqtt_url=ingest_url,
            mqtt_control_url=control_url,
            mqtt_password_file=workdir / "ingest-password" if secrets else None,
            mqtt_control_password_file=workdir / "control-password" if secrets else None,
            mqtt_protocol=broker.protocol,
            data_dir=workdir,
        )
        api_url = f"http://127.0.0.1:{api_port}"
        config_path = workdir / "edge.yaml"
        config_path.write_text(
            demo_agent_config(
                broker_url=agent_url,
                protocol=broker.protocol,
                workdir=workdir,
                hours=(duration or 24 * 3600) / 3600,
                cloud=_cloud_section(api_url, credentials, workdir),
                sensors=sensor_pipelines_yaml(sensors, SUMMARY_EVERY_S),
                password_file=workdir / "agent-password" if secrets else None,
            )
        )
        agent = Agent(load_config(config_path))
        app = create_app(settings)
    except BaseException:
        if sensors is not None:
            sensors.press.stop()
        broker.stop()
        raise
    return _Platform(workdir, broker, agent_url, app, api_port, agent, sensors)


def _run(console: Any, platform: _Platform, duration: float | None) -> None:
    """Serve the API, start the agent, roll a model out after a while, show the live view."""
    from cli.demo_cloud_models import seed_cloud_models
    from cloud_api.auth import create_api_key

    app, api_url = platform.app, platform.api_url
    with serve_in_thread(app, port=platform.api_port):
        with app.state.sessionmaker() as session:
            _, admin_key = create_api_key(session, name="demo-admin", scope="admin")
        seed_cloud_models(console, api_url, admin_key)
        platform.agent.start()
        rollout = threading.Timer(
            ROLLOUT_AFTER_S, _roll_out, args=(console, api_url, admin_key, platform.workdir)
        )
        rollout.daemon = True
        try:
            _print_intro(
                console, api_url, admin_key, platform.broker, platform.agent_url, platform.workdir
            )
            metrics = platform.agent.metrics
            if metrics is not None and metrics.port:
                console.print(
                    f"[bold]Agent metrics[/] http://127.0.0.1:{metrics.port}/metrics "
                    "(probes: /livez, /readyz)"
                )
            rollout.start()
            show_live(console, api_url, admin_key, duration)
        except KeyboardInterrupt:
            console.print("stopping...")
        finally:
            rollout.cancel()
            platform.agent.stop()


@dataclass(frozen=True)
class _Credentials:
    agent_password: str
    ingest_password: str
    control_password: str
    public_key: str


def _prepare_cloud(database_url: str, workdir: Path, *, broker_auth: bool) -> _Credentials:
    """The database migrated, the agent enrolled (and, for an authenticating broker, the
    ingest worker's broker user and the broker's files): what an operator does once."""
    from cloud_api.broker_config import write_broker_config
    from cloud_api.credentials import create_broker_user, enroll_agent
    from cloud_api.db import create_db_engine, create_sessionmaker, migrate
    from cloud_api.registry import load_or_create_signing_key
    from shared.signing import encode_public_key

    # The API loads the same key from the data dir when it starts.
    public_key = encode_public_key(load_or_create_signing_key(workdir).public_key())
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        with create_sessionmaker(engine)() as session:
            _, agent_password = enroll_agent(session, agent_id=DEMO_AGENT, labels={"demo": "1"})
            ingest_password = control_password = ""
            if broker_auth:
                _, ingest_password, _ = create_broker_user(
                    session, username="ingest", role="ingest"
                )
                _, control_password, _ = create_broker_user(
                    session, username="control", role="control"
                )
                write_broker_config(session, workdir / "broker")
    finally:
        engine.dispose()
    return _Credentials(agent_password, ingest_password, control_password, public_key)


def _print_intro(
    console: Any, api_url: str, admin_key: str, broker: Any, agent_url: str, workdir: Path
) -> None:
    console.print(f"[bold]Dashboard[/] {api_url}/#key={admin_key}")
    console.print(f"[bold]API[/] {api_url}  (OpenAPI: {api_url}/docs)")
    console.print(f"[bold]Admin key[/] {admin_key}  (Authorization: Bearer ...)")
    access = "per-agent credentials and ACLs" if agent_url != broker.url else "anonymous"
    console.print(f"[bold]Broker[/] {broker.url}  ({broker.name}, {access})")
    console.print(f"[bold]Data[/] {workdir}  (SQLite, outbox, agent config edge.yaml)")
    console.print(
        f"A spindle fault every {FAULT_EVERY_S:.0f} s, a car or a person every "
        f"~{OBJECT_EVERY_S:.0f} s, a worn pump on the Modbus press every "
        f"{PRESS_FAULT_EVERY_S:.0f} s, and river's real water-flow recording replayed at an "
        f"hour a second; vibration-anomaly {ROLLOUT_VERSION} is rolled out after "
        f"{ROLLOUT_AFTER_S:.0f} s; Ctrl-C stops everything.\n"
    )


def _authenticate_broker(
    broker: MosquittoProcess, credentials: _Credentials, workdir: Path
) -> tuple[str, str, str]:
    """Start Mosquitto with broker-config's files; the MQTT URLs of the ingest worker, of the
    rollout worker (which publishes desired states) and of the agent. Their passwords go to
    ``<user>-password`` files (0600) in ``workdir``, never into a URL or the agent's YAML."""
    broker.allow_anonymous = False
    broker.extra_config += (
        f"password_file {workdir / 'broker' / 'passwd'}\nacl_file {workdir / 'broker' / 'acl'}\n"
    )
    for user, password in (
        ("ingest", credentials.ingest_password),
        ("control", credentials.control_password),
        ("agent", credentials.agent_password),
    ):
        path = workdir / f"{user}-password"
        path.touch(mode=0o600)
        path.write_text(password)
    address = f"127.0.0.1:{broker.port}"
    return (
        f"mqtt://ingest@{address}",
        f"mqtt://control@{address}",
        f"mqtt://{DEMO_AGENT}@{address}",
    )


def _cloud_section(api_url: str, credentials: _Credentials, workdir: Path) -> str:
    """The agent's ``cloud:`` and ``updates:`` YAML: where to download, whom to trust."""
    password_file = workdir / "agent-password"
    password_file.write_text(credentials.agent_password)
    password_file.chmod(0o600)
    return f"""\
cloud:
  api_url: {api_url}
  public_key: {credentials.public_key}
  username: {DEMO_AGENT}
  password_file: {password_file}
updates:
  dir: {workdir / "models"}
  health_window_s: 10
"""


def _roll_out(console: Any, api_url: str, api_key: str, workdir: Path) -> None:
    """What an operator does: register a new version, deploy it (the live view shows the rest)."""
    import httpx

    import models
    from models.release import write_release

    shipped = Path(models.__file__).resolve().parent / "vibration-anomaly-1.0.0.onnx"
    release = write_release(
        shipped,
        workdir / f"vibration-anomaly-{ROLLOUT_VERSION}.onnx",
        name="vibration-anomaly",
        version=ROLLOUT_VERSION,
        note="re-released by aiot demo",
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with (
            httpx.Client(base_url=api_url, timeout=30, headers=headers) as client,
            release.open("rb") as file,
        ):
            client.post(
                "/api/v1/models/vibration-anomaly/versions",
                data={"version": ROLLOUT_VERSION, "task": "anomaly",
                      "labels": ",".join(VIBRATION_LABELS)},
                files={"file": (release.name, file, "application/octet-stream")},
            ).raise_for_status()  # fmt: skip
            deployment = client.post(
                "/api/v1/deployments",
                json={
                    "model": "vibration-anomaly",
                    "version": ROLLOUT_VERSION,
                    "pipeline": VIBRATION_PIPELINE,
                    "target": {"labels": {"demo": "1"}},
                    "strategy": {"canary_fraction": 1.0, "canary_healthy_s": 5},
                },
            )
            deployment.raise_for_status()
    except httpx.HTTPError as exc:
        console.print(f"[red]rollout of {ROLLOUT_VERSION} could not start: {exc}[/]")
        return
    console.print(
        f"[bold]Rollout[/] deployment {deployment.json()['id']}: vibration-anomaly "
        f"{ROLLOUT_VERSION} to every agent labelled demo=1 (POST /api/v1/deployments)"
    )
