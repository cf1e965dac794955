"""Every long-running command stops the same way on SIGTERM and SIGINT: in order, saying
"stopped", with exit status 0 and no process of its own left behind.

What `docker stop`, systemd and `kill` send is SIGTERM; before, `aiot demo` died on it at
once and left its Mosquitto child running, orphaned.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.conftest import model_section
from tests.ops.processes import Command, alive, descendants, wait_until
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.fixture
def command(tmp_path: Path) -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for each in started:
        each.kill()


def stop_and_check(each: Command, signum: int, before: set[int] | None = None) -> str:
    """Send ``signum``; the command must exit 0, say "stopped", and leave no child alive."""
    children = descendants(each.pid) if before is None else before
    assert each.process is not None
    each.process.send_signal(signum)
    code = each.finish()
    output = each.output()
    assert code == 0, output
    assert "stopped" in output.strip().splitlines()[-1], output
    # A child may take a moment to notice its parent is gone (multiprocessing's resource
    # tracker reads until its pipe closes); what counts is that none stays.
    wait_until(lambda: not alive(children), 30, f"the children {children} to end\n{output}")
    return output


def edge_config(tmp_path: Path, broker_url: str = "mqtt://127.0.0.1:1") -> Path:
    model = model_section()
    path = tmp_path / "edge.yaml"
    path.write_text(
        "agent_id: signals-test\n"
        f"mqtt: {{url: '{broker_url}'}}\n"
        f"outbox: {{path: '{tmp_path / 'outbox.db'}'}}\n"
        f"metrics: {{port: {free_port()}}}\n"
        "pipelines:\n"
        "  - name: spindle\n"
        "    source: {type: simulated_vibration, seed: 1, speed: 1.0}\n"
        f"    model: {{name: {model['name']}, path: '{model['path']}', "
        f"version: '{model['version']}', labels: {model['labels']}, normal_label: healthy}}\n"
    )
    return path


@pytest.mark.parametrize("signum", SIGNALS)
def test_aiot_edge_run(signum: int, tmp_path: Path, command: list[Command]) -> None:
    agent = Command(["edge", "run", "--config", str(edge_config(tmp_path))], tmp_path / "log")
    command.append(agent.start())
    agent.wait_for("agent signals-test started")
    output = stop_and_check(agent, signum)
    assert "items wait in the outbox" in output  # the outbox was closed, in order


@pytest.mark.parametrize("signum", SIGNALS)
def test_aiot_cloud_ingest(
    signum: int, broker: Mosquitto, tmp_path: Path, command: list[Command]
) -> None:
    worker = Command(
        ["cloud", "ingest", "--db", f"sqlite:///{tmp_path / 'cloud.db'}", "--mqtt", broker.url,
         "--client-id", f"signals-{tmp_path.name}"[:60], "--metrics-port", str(free_port())],
        tmp_path / "log",
    )  # fmt: skip
    command.append(worker.start())
    worker.wait_for("subscribed")
    output = stop_and_check(worker, signum)
    assert re.search(r"ingest worker \S+ stopped: messages=\d+", output)


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2), (signal.SIGINT, 2)],
)
def test_aiot_cloud_serve(
    signum: int, workers: int, broker: Mosquitto, tmp_path: Path, command: list[Command]
) -> None:
    ingest = ["--no-ingest"] if workers > 1 else ["--mqtt", broker.url]
    server = Command(
        ["cloud", "serve", "--port", str(free_port()), "--db", f"sqlite:///{tmp_path / 'c.db'}",
         "--workers", str(workers), *ingest],
        tmp_path / "log",
    )  # fmt: skip
    command.append(server.start())
    server.wait_for("Application startup complete", count=workers)
    children = descendants(server.pid)
    if workers > 1:
        assert len(children) >= workers  # uvicorn's worker processes
    stop_and_check(server, signum, children)


@pytest.mark.parametrize("signum", SIGNALS)
def test_aiot_demo_stops_its_broker(signum: int, tmp_path: Path, command: list[Command]) -> None:
    demo = Command(["demo", "--port", "0"], tmp_path / "log")
    command.append(demo.start())
    demo.wait_for("Dashboard", timeout=180)
    children = descendants(demo.pid)
    broker = {pid for pid in children if "mosquitto" in Path(f"/proc/{pid}/cmdline").read_text()}
    assert broker, "the demo runs no Mosquitto child"
    output = stop_and_check(demo, signum, children)
    assert "data kept in" in output
