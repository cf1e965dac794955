"""Agents and ingest over mqtts:// for the TLS tests: an agent config with a ``tls:`` block,
the cloud's ingest built from its settings, and a wait on a log line."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloud_api.config import load_settings
from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.worker import IngestWorker
from tests.integration.conftest import MANIFEST

FAULTS = ("imbalance", "bearing_outer_race")


def agent_config(workdir: Path, agent_id: str, mqtt: str, *, duration_s: float = 14.0) -> Path:
    """An agent with one simulated vibration pipeline (two faults) and ``mqtt`` as its
    ``mqtt:`` section (indented YAML lines)."""
    schedule = "".join(
        f"        - {{at_s: {2 + 5 * i}, duration_s: 2.5, fault: {fault}}}\n"
        for i, fault in enumerate(FAULTS)
    )
    path = workdir / f"{agent_id}.yaml"
    path.write_text(
        f"agent_id: {agent_id}\n"
        f"mqtt:\n{mqtt}"
        f"outbox: {{path: '{workdir / (agent_id + '-outbox.db')}'}}\n"
        "pipelines:\n"
        "  - name: spindle-vibration\n"
        "    source:\n"
        "      type: simulated_vibration\n"
        "      seed: 11\n"
        "      speed: 0\n"
        f"      duration_s: {duration_s}\n"
        f"      schedule:\n{schedule}"
        f"    model: {{name: vibration-anomaly, manifest: '{MANIFEST}'}}\n"
    )
    path.chmod(0o600)
    return path


@contextmanager
def ingest_from_settings(directory: Path, **settings: object) -> Iterator[IngestWorker]:
    """The cloud's ingest on SQLite, its broker, password and TLS files from cloud settings
    (what `aiot cloud ingest` and the API do)."""
    config = load_settings(database_url=f"sqlite:///{directory / 'cloud.db'}", **settings)
    engine = create_db_engine(config.database_url)
    migrate(engine)
    worker = IngestWorker(
        engine=engine,
        mqtt_url=config.ingest_broker(),
        tls=config.mqtt_tls(),
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        engine.dispose()


def wait_for_line(log: Path, text: str, timeout: float = 60.0) -> str:
    """The log's text once it holds ``text``; AssertionError with the log otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in {log} after {timeout} s:\n{content[-3000:]}")
        time.sleep(0.1)
