"""The whole platform for end-to-end tests: the real API app, a real broker, agents as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import models
from cloud_api.config import Settings
from cloud_api.main import create_app
from tests.cloud.helpers import new_api_key
from tests.services import Mosquitto

MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"
AIOT = Path(sys.executable).parent / "aiot"
WINDOW_S = 2048 / 12800.0


def agent_yaml(
    *, agent_id: str, broker: Mosquitto, workdir: Path, schedule: list[dict[str, Any]],
    duration_s: float, speed: float, heartbeat_s: float = 1.0,
    summary_interval_s: float | None = None,
) -> Path:  # fmt: skip
    """An agent config with one simulated vibration pipeline on the shipped model."""
    faults = (
        "".join(
            f"        - {{at_s: {f['at_s']}, duration_s: {f['duration_s']}, fault: {f['fault']}}}\n"
            for f in schedule
        )
        or "        []\n"
    )
    path = workdir / f"{agent_id}.yaml"
    path.write_text(
        f"agent_id: {agent_id}\n"
        f"mqtt: {{url: '{broker.url}', heartbeat_s: {heartbeat_s}}}\n"
        f"outbox: {{path: '{workdir / (agent_id + '-outbox.db')}', batch_max_events: 20}}\n"
        "pipelines:\n"
        "  - name: spindle-vibration\n"
        "    source:\n"
        "      type: simulated_vibration\n"
        "      seed: 11\n"
        f"      speed: {speed}\n"
        f"      duration_s: {duration_s}\n"
        "      schedule:\n"
        f"{faults}"
        f"    model: {{name: vibration-anomaly, manifest: '{MANIFEST}'}}\n"
        + (f"    summary_interval_s: {summary_interval_s}\n" if summary_interval_s else "")
    )
    return path


@dataclass
class AgentProcess:
    """`aiot edge run` as a child process, ended by its pid."""

    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = field(default=0)

    def start(self) -> None:
        self.runs += 1
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AIOT), "edge", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code (-9 after SIGKILL)."""
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[Path], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(config: Path) -> AgentProcess:
        agent = AgentProcess(config, tmp_path / f"{config.stem}.log")
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@dataclass
class IngestProcess:
    """`aiot cloud ingest` as a child process, so that a test can SIGSTOP, SIGCONT or kill it."""

    database_url: str
    mqtt_url: str
    log: Path
    protocol: str = "5"
    client_id: str = "ingest-1"
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AIOT), "cloud", "ingest", "--db", self.database_url, "--mqtt", self.mqtt_url,
                 "--mqtt-protocol", self.protocol, "--client-id", self.client_id,
                 "--metrics-port", "0"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        wait_until(
            lambda: "subscribed" in self.output() or self.process is None
            or self.process.poll() is not None,
            60,
            f"{self.client_id} to subscribe",
        )  # fmt: skip
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connects(self) -> int:
        """How many times it has connected to the broker (and subscribed again) so far."""
        return self.output().count("ingest connected to")

    def pause(self) -> None:
        """SIGSTOP: the process stays, its connections stay open, nothing of it runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> int | None:
        """SIGTERM (after SIGCONT if paused) and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        self.process = None
        return code


@contextmanager
def cloud_client(database_url: str, broker: Mosquitto, data_dir: Path) -> Iterator[TestClient]:
    """The running app (``with cloud_client(...) as client``), its client holding an admin key."""
    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=data_dir,
        ingest_client_id=f"ingest-{data_dir.name}"[:64],
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key(client, 'admin')}"
        yield client


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def all_events(client: TestClient, **filters: str) -> list[dict[str, Any]]:
    """Every event the API returns for the filters, walking the keyset pages."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "limit": "500", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/events", params=params).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
