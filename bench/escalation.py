"""Cloud runner throughput: escalations answered with dynamic batching against one at a
time, on the same shipped cloud model, in the same run.

The runner is the one the API runs (``cloud_api.escalation.runner``): each batch is
validated, checked against stored answers and the quota, run through the pipeline's cloud
model in one ONNX Runtime call, and stored with its answers in one SQLite transaction. Only
the broker is left out (its rate is the ingest benchmark's): the messages are handed to the
runner as the worker hands them, ``BATCH`` at a time against one at a time. Both sides get
fresh escalation ids each round, so nothing is answered from a stored result.
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import models
from bench.result import Goal, Result
from cloud_api.db import create_db_engine, migrate
from cloud_api.escalation.model import CloudModel
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.runner import Runner
from cloud_api.ingest.parse import Inbound
from cloud_api.registry import (
    FileArtifactStore,
    artifact_key,
    load_or_create_signing_key,
    register_model,
)
from cloud_api.tables import CloudModelRow
from edge_agent.sources.machine_physics import LABELS, MachineSpec, SimulatedMachine
from models import vibration_cloud
from models.vibration import WINDOW
from shared.escalations import Escalation
from shared.messages import ModelRef, encode, new_event_id, utcnow
from shared.samples import PrivacyPolicy, WindowInfo
from shared.topics import Channel, Topic

PIPELINE = "bench-vibration"
AGENTS = 8
MESSAGES = 256
BATCH = 32
ROUNDS = 5
EDGE = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="0" * 64)


def _npy(window: np.ndarray[Any, Any]) -> str:
    """The window as an agent sends it: ``.npy`` bytes in base64."""
    buffer = io.BytesIO()
    np.save(buffer, window, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _setup(workdir: Path) -> tuple[Engine, FileArtifactStore]:
    engine = create_db_engine(f"sqlite:///{workdir / 'cloud.db'}")
    migrate(engine)
    artifacts = FileArtifactStore(workdir / "artifacts")
    name, version = vibration_cloud.NAME, vibration_cloud.VERSION
    path = Path(models.__file__).resolve().parent / f"{name}-{version}.onnx"
    with Session(engine) as session, path.open("rb") as source:
        register_model(
            session, store=artifacts, signing_key=load_or_create_signing_key(workdir),
            name=name, version=version, source=source, tmp_dir=workdir / "tmp",
            max_bytes=1 << 30, task="vibration-anomaly", labels=list(LABELS),
        )  # fmt: skip
        session.add(
            CloudModelRow(
                pipeline=PIPELINE, model=name, version=version, normal_label=LABELS[0],
                updated_at=utcnow(), updated_by="bench",
            )
        )  # fmt: skip
        session.commit()
    return engine, artifacts


def _messages(windows: list[str]) -> list[Inbound]:
    """Fresh escalations of ``windows`` from AGENTS agents, as the broker delivers them."""
    out = []
    for i, data in enumerate(windows):
        agent = f"bench-gw-{i % AGENTS}"
        escalation = Escalation(
            id=new_event_id(), agent_id=agent, pipeline=PIPELINE, ts=utcnow(), model=EDGE,
            label="healthy", score=0.5, kind="window",
            window=WindowInfo(shape=[WINDOW], sample_rate_hz=12800.0),
            privacy=PrivacyPolicy(), data=data,
        )  # fmt: skip
        topic = str(Topic(agent, Channel.ESCALATIONS))
        out.append(Inbound(topic, encode(escalation), i, 1, False, time.time(), 0))
    return out


def _rate(runner: Runner, windows: list[str], batch: int) -> float:
    messages = _messages(windows)
    started = time.perf_counter()
    for at in range(0, len(messages), batch):
        results, stats = runner.handle(messages[at : at + batch])
        assert stats.answered == len(results), "the bench's escalations must all be answered"
    return len(messages) / (time.perf_counter() - started)


def _model_alone(
    artifacts: FileArtifactStore, windows: list[str], threads: int
) -> dict[str, float]:
    """The session alone, batches of BATCH against one at a time: how much of the runner's
    gain is the model's (the rest is one transaction and one model lookup per batch)."""
    name, version = vibration_cloud.NAME, vibration_cloud.VERSION
    model = CloudModel(
        artifacts.get(artifact_key(name, version)), name=name, version=version, sha256="",
        labels=list(LABELS), normal_label=LABELS[0], threads=threads,
    )  # fmt: skip
    inputs = [np.load(io.BytesIO(base64.b64decode(w))) for w in windows]
    rates = {}
    for batch in (1, BATCH):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for at in range(0, len(inputs), batch):
                model.run(inputs[at : at + batch])
        rates[batch] = ROUNDS * len(inputs) / (time.perf_counter() - started)
    return {
        "session_only_batch_1_per_s": round(rates[1]),
        f"session_only_batch_{BATCH}_per_s": round(rates[BATCH]),
        "session_only_ratio": round(rates[BATCH] / rates[1], 2),
    }


def bench_escalation(threads: int = 1) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-escalation-"))
    engine, artifacts = _setup(workdir)
    machine = SimulatedMachine(MachineSpec(), seed=4)
    windows = [_npy(machine.window(None if i % 3 else LABELS[i % 6])) for i in range(MESSAGES)]
    quota = Quota(per_min=1e9, burst=1_000_000)
    one = Runner(engine=engine, artifacts=artifacts, quota=quota, batch_max=1, threads=threads)
    batched = Runner(
        engine=engine, artifacts=artifacts, quota=quota, batch_max=BATCH, threads=threads
    )
    _rate(one, windows[:16], 1)  # warm-up: loads the model in each
    _rate(batched, windows[:BATCH], BATCH)
    one_rates: list[float] = []
    batched_rates: list[float] = []
    for i in range(ROUNDS):
        order = [(one, 1, one_rates), (batched, BATCH, batched_rates)]
        for runner, batch, rates in order if i % 2 else reversed(order):
            rates.append(_rate(runner, windows, batch))
    return [
        Result(
            name=f"cloud runner, dynamic batches of {BATCH}",
            value=float(np.median(batched_rates)),
            unit="escalations/s",
            baseline=float(np.median(one_rates)),
            baseline_name="the same runner and model, one escalation at a time",
            goal=Goal.ratio(">=", 3.0),
            details={
                **_model_alone(artifacts, windows, threads),
                "model": f"{vibration_cloud.NAME} {vibration_cloud.VERSION}",
                "messages": MESSAGES,
                "rounds": ROUNDS,
                "ort_threads": threads,
                "database": "sqlite (file)",
            },
        )
    ]
