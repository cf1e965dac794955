"""The cloud model runner in the real app: escalations published on the real broker as an
agent publishes them, answered on ``escalations/result`` by the shipped cloud model in ONNX
Runtime, stored in SQLite and PostgreSQL, with labels on the samples behind them. (Batching
against runs of one is tested on the runner fed directly: test_escalation_runner.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from fastapi.testclient import TestClient

from cloud_api.escalation.worker import EscalationWorker
from shared.escalations import Escalation
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.escalation_helpers import (
    MODELS,
    PIPELINE,
    Results,
    escalation,
    register_cloud_model,
    windows,
)
from tests.cloud.helpers import Publisher, topic, unique_agent_id, wait_until
from tests.cloud.sample_helpers import npy_bytes, upload, window_sample
from tests.services import Mosquitto


def runner_of(client: TestClient) -> EscalationWorker:
    worker = client.app.state.escalations  # type: ignore[attr-defined]
    assert isinstance(worker, EscalationWorker)
    return worker


@contextmanager
def running(make_api: AppFactory, **changes: object) -> Iterator[TestClient]:
    """The app with its runner subscribed and the cloud model set for PIPELINE."""
    with make_api(**changes) as client:
        runner_of(client).wait_connected()
        register_cloud_model(client)
        yield client


def send(publisher: Publisher, *escalations: Escalation) -> None:
    for one in escalations:
        publisher.publish(topic(one.agent_id, Channel.ESCALATIONS), encode(one))


def test_a_repeated_escalation_is_run_once_and_answered_alike(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("esc")
    results = Results(broker.port, agent)
    try:
        with running(make_api) as api:
            one = escalation(agent, windows(1)[0])
            for times in (1, 2, 3):
                send(publisher, one)
                results.wait(times)
            runner = runner_of(api)
            assert runner.totals.inputs_run == 1
            assert runner.totals.repeats == 2
            first, *again = results.wait(3)
            assert all(r == first for r in again)
            page = api.get("/api/v1/escalations", params={"agent_id": agent}).json()
            assert [item["id"] for item in page["items"]] == [one.id]
    finally:
        results.close()


def test_an_agent_over_its_quota_is_refused(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent, other = unique_agent_id("esc"), unique_agent_id("esc")
    results, others = Results(broker.port, agent), Results(broker.port, other)
    try:
        with running(make_api, escalation_quota_burst=3, escalation_quota_per_min=0.01) as api:
            sent = [escalation(agent, w) for w in windows(5)]
            send(publisher, *sent, escalation(other, windows(1)[0]))
            got = results.wait(5)
            assert [r.outcome for r in got].count("answered") == 3
            refused = [r for r in got if r.outcome == "refused"]
            assert len(refused) == 2
            assert all("over quota" in r.reason for r in refused)
            # Another agent has its own bucket.
            assert others.wait(1)[0].outcome == "answered"
            stats = api.get("/api/v1/escalations/stats", params={"agent_id": agent}).json()
            [row] = stats["pipelines"]
            assert (row["escalations"], row["answered"], row["refused"]) == (5, 3, 2)
            metrics = api.get("/metrics").text
            assert f'aiot_escalations_total{{agent="{agent}",outcome="refused:quota"' in metrics
            labels = f'{{agent_id="{agent}",pipeline="{PIPELINE}"}}'
            assert f"aiot_escalations_last_hour{labels} 5.0" in metrics
            assert f"aiot_escalations_refused_last_hour{labels} 2.0" in metrics
            assert f"aiot_escalation_agreement_ratio{labels}" in metrics
    finally:
        results.close()
        others.close()


def test_no_cloud_model_and_bad_inputs_are_refused_with_their_reason(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("esc")
    results = Results(broker.port, agent)
    try:
        with running(make_api):
            good = windows(1)[0]
            no_model = escalation(agent, good, pipeline="no-such-pipeline")
            short = escalation(agent, good[:100])
            not_npy = escalation(agent, good, data=b"not a numpy file")
            ok = escalation(agent, good)
            send(publisher, no_model, short, not_npy, ok)
            results.wait(4)
            got = results.by_id()
            assert got[no_model.id].outcome == "refused"
            assert "no cloud model for pipeline 'no-such-pipeline'" in got[no_model.id].reason
            assert "does not fit the cloud model's input" in got[short.id].reason
            assert "not a .npy array" in got[not_npy.id].reason
            assert got[ok.id].outcome == "answered"
    finally:
        results.close()


def test_a_malformed_payload_is_a_dead_letter_and_its_neighbours_are_answered(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("esc")
    results = Results(broker.port, agent)
    try:
        with running(make_api, escalation_wait_ms=300.0) as api:
            before, after = (escalation(agent, w) for w in windows(2))
            send(publisher, before)
            publisher.publish(topic(agent, Channel.ESCALATIONS), b'{"id": "not an escalation"}')
            send(publisher, after)
            got = {r.escalation_id: r for r in results.wait(2)}
            assert got[before.id].outcome == got[after.id].outcome == "answered"
            runner_of(api).wait_idle()
            dead = api.get("/api/v1/dead-letters").json()
            mine = [d for d in dead["items"] if d["topic"] == topic(agent, Channel.ESCALATIONS)]
            assert len(mine) == 1
            assert "validation error" in mine[0]["reason"]
    finally:
        results.close()


def test_both_answers_label_the_sample_in_either_order_and_disagreements_are_reviewed(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("esc")
    results = Results(broker.port, agent)
    fault = windows(2)[1]  # imbalance, which the edge here calls healthy: a disagreement
    try:
        with running(make_api) as api:
            ids = []
            for sample_first in (True, False):
                meta, blob = window_sample(agent, shape=fault.shape, label="healthy")
                blob = npy_bytes(fault)
                meta = meta.model_copy(update=_sized(blob))
                one = escalation(agent, fault, label="healthy", sample_id=meta.id)
                if sample_first:
                    assert upload(api, meta, blob).status_code == 201
                send(publisher, one)
                wait_until(partial(results.has, one.id), what="an answer")
                if not sample_first:
                    assert upload(api, meta, blob).status_code == 201
                ids.append(meta.id)
            for sample_id in ids:
                labels = api.get("/api/v1/samples", params={"agent_id": agent}).json()["items"]
                [item] = [i for i in labels if i["id"] == sample_id]
                by_source = {label["source"]: label for label in item["labels"]}
                assert by_source["edge"]["label"] == "healthy"
                assert by_source["cloud"]["label"] == "imbalance"
                assert by_source["cloud"]["model"] == "vibration-anomaly-cloud 1.0.0"
                assert len(item["labels"]) == 2
            review = api.get("/api/v1/samples/review", params={"agent_id": agent}).json()["items"]
            assert sorted(r["sample"]["id"] for r in review) == sorted(ids)
            assert {(r["edge_label"], r["cloud_label"]) for r in review} == {
                ("healthy", "imbalance")
            }
    finally:
        results.close()


def _sized(blob: bytes) -> dict[str, object]:
    import hashlib

    return {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def test_cloud_models_are_set_by_operators_and_checked(make_api: AppFactory) -> None:
    with running(make_api, escalation_enabled=True) as api:
        listed = api.get("/api/v1/cloud-models").json()
        assert [(m["pipeline"], m["model"], m["normal_label"]) for m in listed] == [
            (PIPELINE, "vibration-anomaly-cloud", "healthy")
        ]
        unknown = api.put("/api/v1/cloud-models/p1", json={"model": "nope", "version": "1"})
        assert unknown.status_code == 404
        bad_label = api.put(
            "/api/v1/cloud-models/p1",
            json={"model": "vibration-anomaly-cloud", "version": "1.0.0", "normal_label": "x"},
        )
        assert bad_label.status_code == 422
        detector = (MODELS / "detector-1.0.0.onnx").read_bytes()
        uploaded = api.post(
            "/api/v1/models/scene-detector/versions",
            data={"version": "1.0.0", "task": "detection", "labels": "car,person"},
            files={"file": ("model.onnx", detector, "application/octet-stream")},
        )
        assert uploaded.status_code == 201, uploaded.text
        detection = api.put(
            "/api/v1/cloud-models/yard", json={"model": "scene-detector", "version": "1.0.0"}
        )
        assert detection.status_code == 200, detection.text
        assert (detection.json()["task"], detection.json()["normal_label"]) == ("detection", None)
        with_normal = api.put(
            "/api/v1/cloud-models/yard",
            json={"model": "scene-detector", "version": "1.0.0", "normal_label": "car"},
        )
        assert with_normal.status_code == 422
        assert "a detector has no normal label" in with_normal.json()["detail"]
        assert api.get("/api/v1/cloud-models/p1").status_code == 404
