"""Deployments: the rollout state machine (pure), and the real app driving fake agents.

The fake agents are real paho clients: they publish ``AgentStatus`` retained on their status
topic (ingest stores it) and read the retained desired state the rollout worker publishes.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import typer
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update

import models
from cli.deploy import create, deployment_request, watch
from cli.models import api_headers
from cloud_api.db import AdvisoryLock
from cloud_api.rollout import (
    Observation,
    Rollout,
    RolloutWorker,
    Target,
    advance,
    cancel,
    split_canary,
    with_entry,
)
from cloud_api.schemas import DeploymentStrategy
from cloud_api.tables import AgentRow
from shared.errors import ContractError
from shared.messages import (
    DesiredState,
    ModelRef,
    PipelineStatus,
    UpdateState,
    UpdateStatus,
    encode,
    utcnow,
)
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    Publisher,
    make_status,
    new_api_key,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.services import Mosquitto

MODEL_FILE = Path(models.__file__).resolve().parent / "vibration-anomaly-1.0.0.onnx"
PIPELINE = "spindle-vibration"
OLD = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f2c" + "0" * 60)
NEW_SHA = "ab" * 32
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


# -- the state machine, pure ------------------------------------------------------------


def entry(deployment_id: int, version: str = "2.0.0") -> dict[str, Any]:
    return {"pipeline": PIPELINE, "deployment_id": deployment_id, "version": version}


def rollout(state: str = "canary", **strategy: float) -> Rollout:
    values = {"canary_fraction": 0.2, "canary_healthy_s": 30.0, "agent_timeout_s": 120.0}
    values.update(strategy)
    return Rollout(
        id=7,
        version="2.0.0",
        sha256=NEW_SHA,
        state=state,  # type: ignore[arg-type]
        reason="",
        strategy=DeploymentStrategy.model_validate(values),
        entry=entry(7),
    )


def targets(count: int = 5, canary: int = 1) -> list[Target]:
    ids = [f"agent-{i}" for i in range(count)]
    return [
        Target(agent_id=a, phase="canary" if i < canary else "rest", state="pending", updated_at=T0)
        for i, a in enumerate(ids)
    ]


def running_new(online: bool = True) -> Observation:
    update = UpdateStatus(deployment_id=7, name="vibration-anomaly", version="2.0.0",
                          state="running", ts=T0)  # fmt: skip
    new = ModelRef(name="vibration-anomaly", version="2.0.0", sha256=NEW_SHA)
    return Observation(online=online, model=new, update=update)


def in_state(state: UpdateState, reason: str = "", deployment_id: int = 7) -> Observation:
    update = UpdateStatus(deployment_id=deployment_id, name="vibration-anomaly",
                          version="2.0.0", state=state, reason=reason, ts=T0)  # fmt: skip
    return Observation(online=True, model=OLD, update=update)


ON_OLD = Observation(online=True, model=OLD)


def by_id(step_targets: list[Target]) -> dict[str, Target]:
    return {t.agent_id: t for t in step_targets}


@pytest.mark.parametrize(
    ("count", "fraction", "expected"),
    [(5, 0.2, 1), (5, 0.6, 3), (5, 1.0, 5), (20, 0.2, 4), (3, 0.01, 1), (1, 0.5, 1), (10, 0.25, 3)],
)
def test_canary_count(count: int, fraction: float, expected: int) -> None:
    canary, rest = split_canary([f"a{i:02d}" for i in range(count)][::-1], fraction)
    assert len(canary) == expected
    assert canary + rest == sorted(f"a{i:02d}" for i in range(count))


@given(
    ids=st.sets(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=60),
    percent=st.integers(min_value=1, max_value=100),
)
def test_canary_is_the_first_sorted_ids_and_never_empty(ids: set[str], percent: int) -> None:
    canary, rest = split_canary(list(ids), percent / 100)
    assert canary + rest == sorted(ids)
    assert len(canary) == max(1, math.ceil(percent * len(ids) / 100))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_canary_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ContractError, match="canary fraction"):
        split_canary(["a"], fraction)


def test_first_tick_asks_only_the_canary_and_keeps_its_previous_entry() -> None:
    previous = entry(3, "1.5.0")
    step = advance(rollout(), targets(), {}, {"agent-0": previous}, T0)
    assert step.state == "canary"
    assert step.desired == {"agent-0": entry(7)}
    got = by_id(step.targets)
    assert got["agent-0"].state == "updating"
    assert got["agent-0"].previous == previous
    assert {got[f"agent-{i}"].state for i in range(1, 5)} == {"pending"}


def test_rest_waits_until_the_canary_was_healthy_long_enough() -> None:
    plan = rollout(canary_healthy_s=30)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {f"agent-{i}": ON_OLD for i in range(5)} | {"agent-0": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=5))
    assert by_id(step.targets)["agent-0"].state == "healthy"
    assert (step.state, step.desired) == ("canary", {})
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=34))
    assert (step.state, step.desired) == ("canary", {})  # healthy for 29 s only
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=35))
    assert step.state == "rolling"
    assert sorted(step.desired) == ["agent-1", "agent-2", "agent-3", "agent-4"]
    assert {t.state for t in step.targets if t.phase == "rest"} == {"updating"}

    seen = {f"agent-{i}": running_new() for i in range(5)}
    step = advance(
        replace_state(plan, "rolling"), step.targets, seen, {}, T0 + timedelta(seconds=60)
    )
    assert step.state == "succeeded"
    assert {t.state for t in step.targets} == {"healthy"}
    assert {t.running_version for t in step.targets} == {"2.0.0"}


def replace_state(plan: Rollout, state: str) -> Rollout:
    return Rollout(plan.id, plan.version, plan.sha256, state, plan.reason, plan.strategy,  # type: ignore[arg-type]
                   plan.entry)  # fmt: skip


def test_an_offline_canary_is_not_healthy() -> None:
    plan = rollout(canary_healthy_s=10)
    step = advance(plan, targets(), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    offline = Observation(
        online=False, model=running_new().model, offline_reason="heartbeat missed"
    )
    step = advance(plan, step.targets, {"agent-0": offline}, {}, T0 + timedelta(seconds=20))
    canary = by_id(step.targets)["agent-0"]
    assert (step.state, canary.state) == ("canary", "updating")
    assert canary.reason == "no longer healthy: offline (heartbeat missed)"
    assert step.desired == {}


@pytest.mark.parametrize(
    ("observed", "state", "reason"),
    [
        (in_state("failed", "sha256 mismatch: artifact tampered"), "failed",
         "sha256 mismatch: artifact tampered"),
        (in_state("rolled_back", "health window: 40 inference errors"), "rolled_back",
         "health window: 40 inference errors"),
    ],
)  # fmt: skip
def test_a_failing_canary_halts_and_every_canary_gets_its_previous_entry_back(
    observed: Observation, state: str, reason: str
) -> None:
    plan = rollout(canary_fraction=0.4)  # 2 of 5
    previous = entry(3, "1.5.0")
    step = advance(plan, targets(canary=2), {}, {"agent-1": previous}, T0)
    step = advance(plan, step.targets, {"agent-1": running_new()}, {}, T0 + timedelta(seconds=1))
    seen = {"agent-0": observed, "agent-1": running_new()}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=2))
    assert step.state == "halted"
    assert step.reason == f"canary agent-0 {state}: {reason}"
    assert step.desired == {"agent-0": None, "agent-1": previous}
    got = by_id(step.targets)
    assert (got["agent-0"].state, got["agent-0"].reason) == (state, reason)
    assert got["agent-1"].state == "rolled_back"
    assert "canary agent-0 failed" in got["agent-1"].reason
    assert {got[f"agent-{i}"].state for i in range(2, 5)} == {"cancelled"}
    # Halted is final: nothing moves any more.
    later = advance(replace_state(plan, "halted"), step.targets, {}, {}, T0 + timedelta(hours=1))
    assert later.desired == {}
    assert later.targets == step.targets


def test_an_agent_that_never_runs_the_version_times_out_in_its_state() -> None:
    plan = rollout(agent_timeout_s=60)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {"agent-0": in_state("downloading")}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=59))
    assert step.state == "canary"
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=60))
    assert step.state == "halted"
    assert step.reason == "canary agent-0 failed: timed out in state downloading"
    assert step.desired == {"agent-0": None}


def test_an_update_report_about_another_deployment_is_not_this_ones() -> None:
    plan = rollout(agent_timeout_s=60)
    step = advance(plan, targets(), {}, {}, T0)
    seen = {"agent-0": in_state("failed", "old news", deployment_id=6)}
    step = advance(plan, step.targets, seen, {}, T0 + timedelta(seconds=61))
    assert step.reason == "canary agent-0 failed: timed out in state pending"


def test_an_agent_that_already_runs_the_artifact_is_healthy() -> None:
    plan = rollout(canary_healthy_s=0)
    already = Observation(online=True, model=running_new().model)
    step = advance(plan, targets(count=1), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": already}, {}, T0 + timedelta(seconds=1))
    assert step.state == "succeeded"


def test_a_failure_in_the_rest_restores_that_agent_and_the_others_go_on() -> None:
    plan = rollout(canary_healthy_s=0)
    step = advance(plan, targets(count=3), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    assert step.state == "rolling"
    rolling = replace_state(plan, "rolling")
    seen = {
        "agent-0": running_new(),
        "agent-1": in_state("failed", "signature does not match"),
        "agent-2": in_state("watching"),
    }
    step = advance(rolling, step.targets, seen, {}, T0 + timedelta(seconds=2))
    assert (step.state, step.desired) == ("rolling", {"agent-1": None})
    seen["agent-2"] = running_new()
    step = advance(rolling, step.targets, seen, {}, T0 + timedelta(seconds=3))
    assert step.state == "halted"
    assert step.reason == "1 of 3 agents failed: agent-1 failed: signature does not match"
    assert step.desired == {}
    assert [t.state for t in step.targets] == ["healthy", "failed", "healthy"]


def test_cancel_stops_pending_and_updating_agents_only() -> None:
    plan = rollout()
    step = advance(plan, targets(count=3), {}, {}, T0)
    step = advance(plan, step.targets, {"agent-0": running_new()}, {}, T0 + timedelta(seconds=1))
    done = cancel(step.targets, T0 + timedelta(seconds=2))
    assert [t.state for t in done] == ["healthy", "cancelled", "cancelled"]


def test_a_desired_state_keeps_the_other_pipelines() -> None:
    manifest = json.loads(
        # A real signed manifest shape, from the registry's schema.
        '{"manifest": {"name": "m", "version": "1", "sha256": "' + "0" * 64 + '", "size": 1,'
        ' "inputs": [], "outputs": []}, "signature": "", "key_id": ""}'
    )

    def model_entry(pipeline: str, deployment_id: int) -> dict[str, Any]:
        return {"pipeline": pipeline, "deployment_id": deployment_id, "manifest": manifest,
                "artifact_path": "/api/v1/models/m/versions/1/artifact"}  # fmt: skip

    before = with_entry(None, agent_id="a", pipeline="camera", entry=model_entry("camera", 1),
                        issued_at=T0)  # fmt: skip
    after = with_entry(before, agent_id="a", pipeline=PIPELINE, entry=model_entry(PIPELINE, 2),
                       issued_at=T0 + timedelta(seconds=1))  # fmt: skip
    state = DesiredState.model_validate(after)
    assert [(p.pipeline, p.deployment_id) for p in state.pipelines] == [
        ("camera", 1),
        (PIPELINE, 2),
    ]
    removed = DesiredState.model_validate(
        with_entry(after, agent_id="a", pipeline="camera", entry=None, issued_at=T0)
    )
    assert [p.pipeline for p in removed.pipelines] == [PIPELINE]


# -- through the real app, a real broker and fake agents --------------------------------


class DesiredWatcher:
    """A real paho client that keeps every desired state it sees, per agent."""

    def __init__(self, broker: Mosquitto, agent_ids: list[str]) -> None:
        self.messages: dict[str, list[DesiredState | None]] = {a: [] for a in agent_ids}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        client_id = f"watch-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._ready.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe([(topic(a, Channel.DESIRED), 1) for a in agent_ids])
        assert self._ready.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        agent_id = msg.topic.split("/")[3]
        state = DesiredState.model_validate_json(msg.payload) if msg.payload else None
        with self._lock:
            self.messages[agent_id].append(state)

    def last(self, agent_id: str) -> DesiredState | None:
        with self._lock:
            seen = self.messages[agent_id]
            return seen[-1] if seen else None

    def count(self, agent_id: str) -> int:
        with self._lock:
            return len(self.messages[agent_id])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FakeAgent:
    """An agent that says, in its retained status, what it runs and how its update goes."""

    def __init__(self, publisher: Publisher, agent_id: str, labels: dict[str, str] | None = None):
        self.publisher, self.agent_id, self.labels = publisher, agent_id, labels or {}
        self.report(OLD)

    def report(self, model: ModelRef, update: UpdateStatus | None = None) -> None:
        pipeline = PipelineStatus(name=PIPELINE, model=model, samples_in=10, inferences=10,
                                  events_out=0, update=update)  # fmt: skip
        status = make_status(self.agent_id, heartbeat_s=30.0, pipelines=[pipeline], ts=utcnow())
        self.publisher.publish(topic(self.agent_id, Channel.STATUS), encode(status), retain=True)

    def update(self, deployment_id: int, version: str, state: UpdateState, *, sha256: str,
               reason: str = "") -> None:  # fmt: skip
        update = UpdateStatus(deployment_id=deployment_id, name="vibration-anomaly",
                              version=version, state=state, reason=reason, ts=utcnow())  # fmt: skip
        swapped = state in ("watching", "running")
        model = (
            ModelRef(name="vibration-anomaly", version=version, sha256=sha256) if swapped else OLD
        )
        self.report(model, update)


def register(client: TestClient, version: str) -> dict[str, Any]:
    response = client.post(
        "/api/v1/models/vibration-anomaly/versions",
        data={"version": version},
        files={"file": ("model.onnx", MODEL_FILE.read_bytes(), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def deploy(client: TestClient, target: dict[str, Any], **strategy: float) -> Any:
    values = {"canary_fraction": 0.2, "canary_healthy_s": 0.0, "agent_timeout_s": 120.0}
    values.update(strategy)
    return client.post(
        "/api/v1/deployments",
        json={"model": "vibration-anomaly", "version": "2.0.0", "pipeline": PIPELINE,
              "target": target, "strategy": values},
    )  # fmt: skip


@pytest.fixture
def rollout_api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(rollout_tick_s=0.05) as client:
        client.app.state.rollout.wait_connected()  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def fleet(rollout_api: TestClient, publisher: Publisher) -> list[FakeAgent]:
    fakes = [FakeAgent(publisher, unique_agent_id(f"roll{i}")) for i in range(5)]
    fakes.sort(key=lambda f: f.agent_id)
    for fake in fakes:
        url = f"/api/v1/agents/{fake.agent_id}"
        wait_until(lambda u=url: rollout_api.get(u).status_code == 200, what=f"{url} stored")  # type: ignore[misc]
    return fakes


@pytest.fixture
def watcher(broker: Mosquitto, fleet: list[FakeAgent]) -> Iterator[DesiredWatcher]:
    watch = DesiredWatcher(broker, [f.agent_id for f in fleet])
    yield watch
    watch.close()


def deployment(client: TestClient, deployment_id: int) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/deployments/{deployment_id}").json()
    return body


def agent_state(client: TestClient, deployment_id: int, agent_id: str) -> dict[str, Any]:
    agents = deployment(client, deployment_id)["agents"]
    return next(a for a in agents if a["agent_id"] == agent_id)


@pytest.mark.integration
def test_canary_then_the_rest_with_retained_desired_states(
    rollout_api: TestClient, fleet: list[FakeAgent], watcher: DesiredWatcher
) -> None:
    record = register(rollout_api, "2.0.0")
    sha = record["sha256"]
    response = deploy(rollout_api, {"agent_ids": [f.agent_id for f in fleet]})
    assert response.status_code == 201, response.text
    created = response.json()
    dep = created["id"]
    assert created["state"] == "canary"
    assert created["counts"]["pending"] == 5
    assert created["strategy"] == {"canary_fraction": 0.2, "canary_healthy_s": 0.0,
                                   "agent_timeout_s": 120.0}  # fmt: skip
    assert created["target"] == {"agent_ids": [f.agent_id for f in fleet]}
    canary, rest = fleet[0], fleet[1:]
    assert [(a["agent_id"], a["phase"]) for a in created["agents"]] == [
        (canary.agent_id, "canary"),
        *((f.agent_id, "rest") for f in rest),
    ]
    assert {a["running_version"] for a in created["agents"]} == {"1.0.0"}

    desired = wait_until(lambda: watcher.last(canary.agent_id), what="canary's desired state")
    assert desired.agent_id == canary.agent_id
    (wanted,) = desired.pipelines
    assert (wanted.pipeline, wanted.deployment_id) == (PIPELINE, dep)
    assert wanted.manifest.model_dump(mode="json") == record["signed_manifest"]
    assert wanted.artifact_path == "/api/v1/models/vibration-anomaly/versions/2.0.0/artifact"
    assert rollout_api.get(wanted.artifact_path).content == MODEL_FILE.read_bytes()
    assert all(watcher.count(f.agent_id) == 0 for f in rest)
    assert deployment(rollout_api, dep)["counts"]["updating"] == 1

    canary.update(dep, "2.0.0", "downloading", sha256=sha)
    canary.update(dep, "2.0.0", "watching", sha256=sha)
    wait_until(lambda: agent_state(rollout_api, dep, canary.agent_id)["running_version"] == "2.0.0",
               what="canary reports the new version")  # fmt: skip
    assert deployment(rollout_api, dep)["state"] == "canary"
    assert all(watcher.count(f.agent_id) == 0 for f in rest)
    canary.update(dep, "2.0.0", "running", sha256=sha)
    for fake in rest:
        got = wait_until(lambda f=fake: watcher.last(f.agent_id), what=f"{fake.agent_id} desired")  # type: ignore[misc]
        assert got.pipelines[0].deployment_id == dep
    assert deployment(rollout_api, dep)["state"] == "rolling"

    for fake in rest:
        fake.update(dep, "2.0.0", "running", sha256=sha)
    done = wait_until(
        lambda: (d := deployment(rollout_api, dep))["state"] == "succeeded" and d,
        what="deployment succeeded",
    )
    assert done["counts"] == {"pending": 0, "updating": 0, "healthy": 5, "failed": 0,
                              "rolled_back": 0, "cancelled": 0}  # fmt: skip
    assert {a["running_version"] for a in done["agents"]} == {"2.0.0"}
    listed = rollout_api.get("/api/v1/deployments", params={"state": "succeeded"}).json()
    assert dep in [d["id"] for d in listed]


@pytest.mark.integration
def test_a_refused_canary_halts_and_gets_its_old_desired_state_back(
    rollout_api: TestClient, fleet: list[FakeAgent], watcher: DesiredWatcher
) -> None:
    sha = register(rollout_api, "2.0.0")["sha256"]
    dep = deploy(rollout_api, {"agent_ids": [f.agent_id for f in fleet]}).json()["id"]
    canary = fleet[0]
    wait_until(lambda: watcher.last(canary.agent_id), what="canary's desired state")
    canary.update(dep, "2.0.0", "failed", sha256=sha, reason="sha256 of the artifact does not "
                  "match the manifest (tampered?)")  # fmt: skip
    halted = wait_until(
        lambda: (d := deployment(rollout_api, dep))["state"] == "halted" and d, what="halted"
    )
    assert halted["reason"] == (
        f"canary {canary.agent_id} failed: sha256 of the artifact does not match the manifest "
        "(tampered?)"
    )
    states = {a["agent_id"]: (a["state"], a["running_version"]) for a in halted["agents"]}
    assert states[canary.agent_id] == ("failed", "1.0.0")
    assert {states[f.agent_id][0] for f in fleet[1:]} == {"cancelled"}

    # The canary had no entry before: its desired state says "run your configured model".
    def restored() -> DesiredState | None:
        last = watcher.last(canary.agent_id)
        return last if last is not None and not last.pipelines else None

    assert wait_until(restored, what="the canary's entry removed").agent_id == canary.agent_id
    assert all(watcher.count(f.agent_id) == 0 for f in fleet[1:])
    # Halted is final, and the pipeline is free for the next deployment.
    assert rollout_api.post(f"/api/v1/deployments/{dep}/cancel").status_code == 409
    again = deploy(rollout_api, {"agent_ids": [canary.agent_id]})
    assert again.status_code == 201, again.text


@pytest.mark.integration
def test_a_silent_agent_times_out_in_the_state_it_reported(
    rollout_api: TestClient, fleet: list[FakeAgent], watcher: DesiredWatcher
) -> None:
    sha = register(rollout_api, "2.0.0")["sha256"]
    canary = fleet[0]
    dep = deploy(rollout_api, {"agent_ids": [canary.agent_id]}, agent_timeout_s=1.0).json()["id"]
    wait_until(lambda: watcher.last(canary.agent_id), what="canary's desired state")
    canary.update(dep, "2.0.0", "self_test", sha256=sha)
    halted = wait_until(
        lambda: (d := deployment(rollout_api, dep))["state"] == "halted" and d, what="halted"
    )
    assert halted["reason"] == f"canary {canary.agent_id} failed: timed out in state self_test"


@pytest.mark.integration
def test_a_label_selector_targets_agents_with_every_label(
    rollout_api: TestClient, fleet: list[FakeAgent]
) -> None:
    register(rollout_api, "2.0.0")
    site = f"plant-{uuid.uuid4().hex[:6]}"
    labels = {
        fleet[0].agent_id: {"site": site, "line": "3"},
        fleet[1].agent_id: {"site": site, "line": "4"},
        fleet[2].agent_id: {"site": site, "line": "3", "extra": "x"},
    }
    with rollout_api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        for agent_id, values in labels.items():
            session.execute(
                update(AgentRow).where(AgentRow.agent_id == agent_id).values(labels=values)
            )
        session.commit()
    response = deploy(rollout_api, {"labels": {"site": site, "line": "3"}}, canary_fraction=0.5)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["target"] == {"labels": {"site": site, "line": "3"}}
    assert [(a["agent_id"], a["phase"]) for a in body["agents"]] == [
        (fleet[0].agent_id, "canary"), (fleet[2].agent_id, "rest"),
    ]  # fmt: skip


@pytest.mark.integration
def test_refusals_name_the_problem(rollout_api: TestClient, fleet: list[FakeAgent]) -> None:
    ids = [f.agent_id for f in fleet]
    assert deploy(rollout_api, {"agent_ids": ids}).status_code == 404  # not registered yet
    register(rollout_api, "2.0.0")
    cases: list[tuple[dict[str, Any], dict[str, float], str]] = [
        ({"agent_ids": []}, {}, "'agent_ids' is empty"),
        ({"labels": {}}, {}, "'labels' is empty"),
        ({"agent_ids": ids, "labels": {"a": "b"}}, {}, "exactly one of"),
        ({"agent_ids": ids}, {"canary_fraction": 0.0}, "greater than 0"),
        ({"agent_ids": ids}, {"canary_fraction": 1.5}, "less than or equal to 1"),
        ({"agent_ids": ["never-seen-1"]}, {}, "agents never reported: never-seen-1"),
        ({"labels": {"site": "nowhere"}}, {}, "no agent has the labels"),
    ]
    for target, strategy, message in cases:
        response = deploy(rollout_api, target, **strategy)
        assert response.status_code == 422, (target, response.text)
        assert message in response.text, (target, response.text)
    other = rollout_api.post(
        "/api/v1/deployments",
        json={"model": "vibration-anomaly", "version": "2.0.0", "pipeline": "no-such-pipeline",
              "target": {"agent_ids": ids[:1]}},
    )  # fmt: skip
    assert other.status_code == 422
    assert "do not report a pipeline 'no-such-pipeline'" in other.text

    first = deploy(rollout_api, {"agent_ids": ids[:2]}, canary_healthy_s=3600.0)
    assert first.status_code == 201
    second = deploy(rollout_api, {"agent_ids": ids[2:]})
    assert second.status_code == 409
    assert f"deployment {first.json()['id']}" in second.text
    cancelled = rollout_api.post(f"/api/v1/deployments/{first.json()['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["reason"] == "cancelled by an operator"
    assert {a["state"] for a in cancelled.json()["agents"]} == {"cancelled"}
    assert deploy(rollout_api, {"agent_ids": ids[2:]}).status_code == 201
    assert rollout_api.get("/api/v1/deployments/999999").status_code == 404


@pytest.mark.integration
def test_a_desired_state_the_broker_lost_is_published_again(
    rollout_api: TestClient, fleet: list[FakeAgent], watcher: DesiredWatcher,
    publisher: Publisher,
) -> None:  # fmt: skip
    register(rollout_api, "2.0.0")
    canary = fleet[0]
    deploy(rollout_api, {"agent_ids": [canary.agent_id]})
    first = wait_until(lambda: watcher.last(canary.agent_id), what="canary's desired state")
    # As if the broker restarted without persistence: the retained message is gone.
    publisher.publish(topic(canary.agent_id, Channel.DESIRED), b"", retain=True)
    again = wait_until(
        lambda: watcher.count(canary.agent_id) >= 3 and watcher.last(canary.agent_id),
        what="the desired state published again",
    )
    assert again == first


@pytest.mark.parametrize(
    ("header", "status", "part"),
    [
        ("bytes=100-", 206, slice(100, None)),
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=-16", 206, slice(-16, None)),
        ("bytes=10-999999999", 206, slice(10, None)),
        ("bytes=999999999-", 416, None),
        ("bytes=9-3", 416, None),
        ("items=0-1", 416, None),
        ("bytes=a-b", 416, None),
        ("bytes=0-1,5-6", 200, slice(None)),
    ],
)
def test_artifact_download_resumes_with_a_range(
    make_api: AppFactory, header: str, status: int, part: slice | None
) -> None:
    content = MODEL_FILE.read_bytes()
    with make_api(ingest_enabled=False, rollout_enabled=False) as client:
        register(client, "2.0.0")
        url = "/api/v1/models/vibration-anomaly/versions/2.0.0/artifact"
        response = client.get(url, headers={"Range": header})
        assert response.status_code == status, response.text
        assert response.headers["accept-ranges"] == "bytes"
        if part is None:
            assert response.headers["content-range"] == f"bytes */{len(content)}"
            return
        assert response.content == content[part]
        if status == 206:
            first = part.indices(len(content))[0]
            last = first + len(response.content) - 1
            assert response.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
        # A resumed download that no longer matches the ETag gets the whole file.
        stale = client.get(url, headers={"Range": "bytes=100-", "If-Range": '"other"'})
        assert (stale.status_code, stale.content) == (200, content)


# -- aiot deploy ------------------------------------------------------------------------


def forwarding_client(api: TestClient, seen: list[httpx.Request], **options: Any) -> httpx.Client:
    """An httpx client like the CLI's whose transport hands each request to the real app."""

    def forward(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = api.request(
            request.method, request.url.raw_path.decode(), content=request.read(),
            headers=dict(request.headers),
        )  # fmt: skip
        return httpx.Response(answer.status_code, content=answer.content)

    return httpx.Client(base_url="http://cloud", transport=httpx.MockTransport(forward), **options)


@pytest.mark.integration
def test_cli_deploys_and_waits_until_the_deployment_ends(
    rollout_api: TestClient, fleet: list[FakeAgent], watcher: DesiredWatcher,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sha = register(rollout_api, "2.0.0")["sha256"]
    canary = fleet[0]
    body = deployment_request(
        model="vibration-anomaly", version="2.0.0", pipeline=PIPELINE, agents=[canary.agent_id],
        labels=[], canary=1.0, healthy_s=0.0, agent_timeout_s=60.0,
    )  # fmt: skip
    seen: list[httpx.Request] = []
    key = new_api_key(rollout_api, "operate")
    with forwarding_client(rollout_api, seen, headers=api_headers(key)) as client:
        created = create(client, body)
        assert watch(client, created["id"], poll_s=0.05, max_polls=1)["state"] == "canary"
        wait_until(lambda: watcher.last(canary.agent_id), what="canary's desired state")
        canary.update(created["id"], "2.0.0", "failed", sha256=sha, reason="bad [signature]")
        final = watch(client, created["id"], poll_s=0.05)
        with pytest.raises(typer.Exit) as exited:
            create(client, body | {"version": "9.9.9"})
    assert final["state"] == "halted"
    assert exited.value.exit_code == 2
    assert "refused (404): model 'vibration-anomaly' has no version '9.9.9'" in (
        capsys.readouterr().err
    )
    assert {r.headers["authorization"] for r in seen} == {f"Bearer {key}"}


@pytest.mark.parametrize(
    ("agents", "labels", "target"),
    [
        (["a", "b"], [], {"agent_ids": ["a", "b"]}),
        ([], ["site=plant-1", "line=3"], {"labels": {"site": "plant-1", "line": "3"}}),
        ([], ["url=a=b"], {"labels": {"url": "a=b"}}),
        (["a"], ["site=x"], None),
        ([], [], None),
        ([], ["site"], None),
        ([], ["=x"], None),
    ],
)
def test_cli_target_is_agents_or_labels(
    agents: list[str], labels: list[str], target: dict[str, Any] | None
) -> None:
    def build() -> dict[str, Any]:
        return deployment_request(
            model="m", version="1", pipeline="p", agents=agents, labels=labels, canary=0.2,
            healthy_s=60.0, agent_timeout_s=600.0,
        )  # fmt: skip

    if target is None:
        with pytest.raises(typer.Exit) as exited:
            build()
        assert exited.value.exit_code == 2
        return
    assert build()["target"] == target
    assert api_headers(None) == {}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_one_replica_ticks_at_a_time_on_postgresql(
    make_api: AppFactory, broker: Mosquitto, publisher: Publisher
) -> None:
    with make_api(rollout_enabled=False) as api:
        register(api, "2.0.0")
        fake = FakeAgent(publisher, unique_agent_id("lock"))
        url = f"/api/v1/agents/{fake.agent_id}"
        wait_until(lambda: api.get(url).status_code == 200, what=f"{url} stored")
        dep = deploy(api, {"agent_ids": [fake.agent_id]}).json()["id"]
        engine = api.app.state.engine  # type: ignore[attr-defined]
        replica = RolloutWorker(engine=engine, mqtt_url=broker.url, client_id="replica-2")
        with engine.connect() as other, other.begin():
            # Another replica is in the middle of its tick: this one skips.
            other.execute(select(func.pg_advisory_xact_lock(AdvisoryLock.ROLLOUT_TICK)))
            replica.run_once()
            assert deployment(api, dep)["counts"]["pending"] == 1
        replica.run_once()
        assert agent_state(api, dep, fake.agent_id)["state"] == "updating"
