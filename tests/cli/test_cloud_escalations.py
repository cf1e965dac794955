"""`aiot cloud escalations`: the cloud model runner as its own process, on the real broker,
answering escalations from the models in the artifact store; ended by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

import models
from cli.broker import free_port
from cloud_api.db import create_db_engine, migrate
from cloud_api.registry import FileArtifactStore, load_or_create_signing_key, register_model
from cloud_api.tables import CloudModelRow
from edge_agent.sources.machine_physics import LABELS
from shared.messages import encode, utcnow
from shared.topics import Channel
from tests.cloud.escalation_helpers import (
    CLOUD_MODEL,
    CLOUD_VERSION,
    PIPELINE,
    Results,
    escalation,
    windows,
)
from tests.cloud.helpers import Publisher, topic, unique_agent_id, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

AIOT = Path(sys.executable).parent / "aiot"


def prepare(db_url: str, data_dir: Path) -> None:
    """A database with the shipped cloud model registered and set for PIPELINE."""
    engine = create_db_engine(db_url)
    migrate(engine)
    onnx = Path(models.__file__).resolve().parent / f"{CLOUD_MODEL}-{CLOUD_VERSION}.onnx"
    with Session(engine) as session, onnx.open("rb") as source:
        register_model(
            session, store=FileArtifactStore(data_dir / "artifacts"),
            signing_key=load_or_create_signing_key(data_dir), name=CLOUD_MODEL,
            version=CLOUD_VERSION, source=source, tmp_dir=data_dir / "tmp", max_bytes=1 << 30,
            task="vibration-anomaly", labels=list(LABELS),
        )  # fmt: skip
        session.add(
            CloudModelRow(
                pipeline=PIPELINE, model=CLOUD_MODEL, version=CLOUD_VERSION,
                normal_label=LABELS[0], updated_at=utcnow(), updated_by="test",
            )
        )  # fmt: skip
        session.commit()
    engine.dispose()


def test_the_runner_process_answers_and_reports_what_it_did(
    broker: Mosquitto, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    prepare(db_url, tmp_path)
    agent = unique_agent_id("esc-cli")
    results = Results(broker.port, agent)
    publisher = Publisher("127.0.0.1", broker.port).connect()
    log = tmp_path / "runner.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(AIOT), "cloud", "escalations", "--db", db_url, "--mqtt", broker.url,
             "--client-id", f"runner-{agent}", "--metrics-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "AIOT_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
    try:
        wait_until(lambda: "subscribed" in log.read_text() or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        answered = escalation(agent, windows(1)[0])
        refused = escalation(agent, windows(1)[0], pipeline="no-cloud-model")
        for one in (answered, refused):
            publisher.publish(topic(agent, Channel.ESCALATIONS), encode(one))
        results.wait(2)
        got = results.by_id()
        assert got[answered.id].outcome == "answered"
        model = got[answered.id].model
        assert model is not None
        assert model.name == CLOUD_MODEL
        assert got[refused.id].outcome == "refused"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        answers = [
            line
            for line in metrics.splitlines()
            if line.startswith("aiot_escalations_total{") and f'agent="{agent}"' in line
        ]
        assert len(answers) == 2, metrics  # the answer (agree or disagree) and the refusal
        assert any(
            'outcome="refused:no_model"' in line and line.endswith(" 1.0") for line in answers
        )
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        results.close()
        publisher.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    assert "cloud models run on cpu" in text or "cloud models run on cuda" in text
    assert "escalation runner stopped: answered=1 refused=1 repeats=0 dead_letters=0" in text


def test_a_share_group_on_mqtt_3_1_1_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(AIOT), "cloud", "escalations", "--db", f"sqlite:///{tmp_path / 'cloud.db'}",
         "--mqtt", "mqtt://127.0.0.1:1", "--mqtt-protocol", "3.1.1", "--share-group", "runners",
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "AIOT_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "AIOT_ESCALATION_SHARE_GROUP needs AIOT_MQTT_PROTOCOL=5" in done.stderr
    assert "Traceback" not in done.stderr
