"""Deployments through the real app: the routes create and cancel them, the rollout worker
moves them, and fake agents answer; ``aiot deploy`` drives the same API.

The fake agents are real paho clients: they publish ``AgentStatus`` retained on their status
topic (ingest stores it) and read the retained desired state the rollout worker publishes.
The state machine itself is tested without I/O in ``test_machine.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import typer
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update

import models
from cli.deploy import create, deployment_request, watch
from cli.models import api_headers
from cloud_api.db import AdvisoryLock
from cloud_api.rollout.worker import RolloutWorker
from cloud_api.tables import AgentRow
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


def deploy(client: TestClient, target: dict[str, Any], **strategy: float | None) -> Any:
    # The model-quality gate is off: these fleets send no summaries (tests/cloud/rollout/
    # test_quality.py has it on).
    values = {"canary_fraction": 0.2, "canary_healthy_s": 0.0, "agent_timeout_s": 120.0,
              "quality": None}  # fmt: skip
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
    assert created["strategy"] == {"kind": "canary", "canary_fraction": 0.2,
                                   "canary_healthy_s": 0.0, "agent_timeout_s": 120.0,
                                   "quality": None, "shadow": None}  # fmt: skip
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
