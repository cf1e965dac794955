"""Rollout test helpers: an agent config with a cloud section, one vibration pipeline, its
updater, and the local HTTP server its artifacts come from."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import AgentConfig
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import LoadedModel, load_slot
from edge_agent.pipelines.sensor import SensorPipeline
from edge_agent.updates.updater import Updater
from shared.messages import DesiredModel, DesiredState, Event, UpdateStatus, utcnow
from shared.signing import SignedManifest, encode_public_key
from tests.edge.conftest import model_section
from tests.edge.updates.artifacts import ArtifactServer
from tests.model_fixtures import MODEL_NAME, sign_manifest, write_same_model

TIMEOUT_S = 60.0
PIPELINE = "spindle"
EVERY_WINDOW = [
    {"type": "threshold", "threshold": -1},
    {"type": "report_interval", "max_s": 0.001},
]
"""Filters that make one event per window, so every window shows which model ran it."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Rollout:
    """An agent's config, one pipeline, its updater and the server the artifacts come from."""

    tmp: Path
    server: ArtifactServer
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    agent_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:10]}")
    states: list[str] = field(default_factory=list)
    updaters: list[Updater] = field(default_factory=list)

    def config(
        self,
        *,
        public_key: str | None = "",
        speed: float = 0.0,
        mqtt: dict[str, Any] | None = None,
        **updates: Any,
    ) -> AgentConfig:
        cloud: dict[str, Any] = {"api_url": self.server.url + "/api"}
        if public_key == "":
            cloud["public_key"] = encode_public_key(self.key.public_key())
        elif public_key is not None:
            cloud["public_key"] = public_key
        cloud.update(updates.pop("cloud", {}))
        return AgentConfig.model_validate(
            {
                "agent_id": self.agent_id,
                "mqtt": mqtt or {},
                "outbox": {"path": str(self.tmp / "outbox.db")},
                "cloud": cloud,
                "updates": {"health_window_s": 0, "retry_backoff_s": 0.01, **updates},
                "pipelines": [
                    {
                        "name": PIPELINE,
                        "source": {
                            "type": "simulated_vibration",
                            "seed": 3,
                            "speed": speed,
                            "duration_s": 3600,
                        },
                        "model": model_section(),
                        "filters": EVERY_WINDOW,
                        "summary_interval_s": 0,
                    }
                ],
            }
        )

    def pipeline(self, config: AgentConfig) -> SensorPipeline:
        p = config.pipelines[0]
        return SensorPipeline(p, load_slot(p.model, RuntimeConfig()))

    def updater(self, config: AgentConfig, pipeline: SensorPipeline) -> Updater:
        def changed() -> None:
            status = updater.status(PIPELINE)
            if status is not None:
                self.states.append(status.state)

        updater = Updater(config, [pipeline], on_change=changed)
        updater.restore()
        updater.start()
        self.updaters.append(updater)
        return updater

    def publish(
        self, version: str, path: Path, signed: SignedManifest | None = None
    ) -> DesiredModel:
        """Serve ``path`` as ``version`` and return the desired entry naming it."""
        artifact = f"/v1/models/{MODEL_NAME}/versions/{version}/artifact"
        self.server.files["/api" + artifact] = path.read_bytes()
        if signed is None:
            signed = sign_manifest(path, MODEL_NAME, version, self.key)
        return DesiredModel(
            pipeline=PIPELINE, deployment_id=int(version.replace(".", "")), manifest=signed,
            artifact_path=artifact,
        )  # fmt: skip

    def desired(self, *entries: DesiredModel) -> DesiredState:
        return DesiredState(agent_id=self.agent_id, issued_at=utcnow(), pipelines=list(entries))

    def stop(self) -> None:
        for updater in self.updaters:
            updater.stop()


def settled(updater: Updater, *states: str) -> Callable[[], bool]:
    def check() -> bool:
        status = updater.status(PIPELINE)
        return status is not None and status.state in states

    return check


def reached(updater: Updater, version: str, state: str) -> Callable[[], bool]:
    def check() -> bool:
        status = updater.status(PIPELINE)
        return status is not None and (status.version, status.state) == (version, state)

    return check


def last(updater: Updater) -> UpdateStatus:
    status = updater.status(PIPELINE)
    assert status is not None
    return status


def running_pipeline(
    pipeline: SensorPipeline, outbox: Outbox
) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()

    def run() -> None:
        with OutboxWriter(outbox) as writer:  # as the agent runs its pipelines
            pipeline.run(writer, stop)

    thread = threading.Thread(target=run)
    thread.start()
    return stop, thread


@dataclass
class LiveUpdate:
    """A running pipeline that was given a new version, once the updater decided."""

    pipeline: SensorPipeline
    old: LoadedModel
    updater: Updater
    entry: DesiredModel
    outbox: Outbox


def update_while_running(
    rollout: Rollout, config: AgentConfig, version: str, model: Path, *, workdir: Path,
    windows_after: int = 10,
) -> LiveUpdate:  # fmt: skip
    """Run the pipeline, let 20 windows pass, ask for ``version`` (the file ``model``), wait
    until the updater settles (running, failed or rolled back) and ``windows_after`` more
    windows pass, then stop the pipeline. Events are in the returned outbox."""
    pipeline = rollout.pipeline(config)
    old = pipeline.slot.current()
    outbox = Outbox(workdir / "events.db", max_bytes=10**9, max_age_s=1e9)
    stop, thread = running_pipeline(pipeline, outbox)
    try:
        updater = rollout.updater(config, pipeline)
        wait_until(lambda: pipeline.counters.inferences >= 20, "windows before the update")
        entry = rollout.publish(version, model)
        updater.submit(rollout.desired(entry))
        wait_until(settled(updater, "running", "failed", "rolled_back"), "the update")
        after = pipeline.counters.inferences
        wait_until(lambda: pipeline.counters.inferences >= after + windows_after, "windows after")
    finally:
        stop.set()
        thread.join()
    return LiveUpdate(pipeline, old, updater, entry, outbox)


def stored_events(outbox: Outbox) -> list[Event]:
    """The events the pipeline made from windows (not the one closed at shutdown)."""
    events: list[Event] = []
    while batch := outbox.next_batch(1000):
        events += [Event.model_validate_json(i.payload) for i in batch]
        outbox.ack([i.item_id for i in batch])
    return [e for e in events if e.attributes.get("closed_by") != "shutdown"]


def refused(rollout: Rollout, entry: DesiredModel, config: AgentConfig | None = None) -> str:
    """Submit ``entry`` and return the reason it failed; the shipped model still runs."""
    config = config or rollout.config()
    pipeline = rollout.pipeline(config)
    old = pipeline.slot.current()
    updater = rollout.updater(config, pipeline)
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "failed", "running"), "the refusal")
    assert last(updater).state == "failed"
    assert pipeline.slot.current() is old
    assert updater.counters.outcomes["failed"] == 1
    return last(updater).reason


def installed_and_stopped(rollout: Rollout, tmp_path: Path) -> tuple[AgentConfig, DesiredModel]:
    """An agent that installed 1.1.0 (same behaviour, new file), then stopped."""
    config = rollout.config()
    updater = rollout.updater(config, rollout.pipeline(config))
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running", "failed"), "the update")
    assert last(updater).state == "running", last(updater).reason
    updater.stop()
    return config, entry
