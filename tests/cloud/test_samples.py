"""Samples through the real app on SQLite and PostgreSQL: agents upload, the cloud checks the
blob by decoding it, keeps it once, lists it with its labels, and feedback labels it."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.retention import Retention
from cloud_api.samples import blob_key
from cloud_api.tables import SampleLabelRow
from shared.messages import encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    Publisher,
    client_as,
    make_batch,
    new_api_key,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.cloud.sample_helpers import image_sample, upload, window_sample
from tests.cloud.test_auth import enroll

pytestmark = pytest.mark.integration


def agent_client(api: TestClient) -> tuple[str, TestClient]:
    agent_id = unique_agent_id("gw")
    return agent_id, client_as(api, basic=(agent_id, enroll(api, agent_id)))


def samples_of(api: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/v1/samples", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_an_agent_uploads_a_window_once_and_reads_it_back(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    meta, blob = window_sample(agent_id, shape=(3, 128))

    first = upload(agent, meta, blob)
    assert first.status_code == 201, first.text
    again = upload(agent, meta, blob)
    assert again.status_code == 200
    assert again.json() == first.json()
    other_bytes = window_sample(agent_id, shape=(3, 128), seed=1)[1]
    changed = meta.model_copy(update={"sha256": hashlib.sha256(other_bytes).hexdigest()})
    conflict = upload(agent, changed, other_bytes)
    assert conflict.status_code == 409
    assert meta.id in conflict.json()["detail"]

    (item,) = samples_of(api, agent_id=agent_id)
    assert item["id"] == meta.id
    assert item["meta"]["window"]["shape"] == [3, 128]
    assert [(lab["label"], lab["source"], lab["model"]) for lab in item["labels"]] == [
        ("normal", "edge", "vibration-anomaly 1.0.0")
    ]
    assert api.get(item["blob_url"]).content == blob
    assert agent.get(item["blob_url"]).content == blob


def test_filters_and_pages(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    start = utcnow() - timedelta(minutes=10)
    for i, reason in enumerate(["random", "band", "event", "band", "random"]):
        meta, blob = window_sample(
            agent_id, seed=i, reason=reason, ts=start + timedelta(seconds=i), label=f"l{i % 2}"
        )
        assert upload(agent, meta, blob).status_code == 201
    assert len(samples_of(api, agent_id=agent_id, reason="band")) == 2
    assert len(samples_of(api, agent_id=agent_id, label="l1", source="edge")) == 2
    assert samples_of(api, agent_id=agent_id, label="l1", source="person") == []
    later = samples_of(api, agent_id=agent_id, since=(start + timedelta(seconds=3)).isoformat())
    assert len(later) == 2
    seen: list[str] = []
    params: dict[str, Any] = {"agent_id": agent_id, "limit": 2}
    while True:
        page = api.get("/api/v1/samples", params=params).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5


def test_bad_samples_get_a_4xx_that_names_the_problem(make_api: AppFactory) -> None:
    with make_api(max_sample_bytes=4096) as api:
        agent_id, agent = agent_client(api)
        big, blob = window_sample(agent_id, shape=(2048,))
        too_large = upload(agent, big, blob)
        assert too_large.status_code == 413
        assert "4096" in too_large.json()["detail"]

        garbage = b"\xff\xd8\xff" + b"not a jpeg at all" * 10
        meta, blob = image_sample(agent_id, garbage)
        broken = upload(agent, meta, blob)
        assert broken.status_code == 422
        assert "not a JPEG" in broken.json()["detail"]
        _, whole = image_sample(agent_id)
        meta, blob = image_sample(agent_id, whole[: len(whole) // 2])  # cut short
        broken = upload(agent, meta, blob)
        assert broken.status_code == 422
        assert "not a JPEG that decodes" in broken.json()["detail"]
        meta, blob = image_sample(agent_id, whole, width=640, height=480)  # says 64x48 inside
        lying = upload(agent, meta, blob)
        assert lying.status_code == 422
        assert "says 64x48, but its metadata declares 640x480" in lying.json()["detail"]

        meta, blob = window_sample(agent_id, shape=(2, 64), declared=(3, 64))
        misshapen = upload(agent, meta, blob)
        assert misshapen.status_code == 422
        assert "[2, 64]" in misshapen.json()["detail"]
        assert "[3, 64]" in misshapen.json()["detail"]

        meta, blob = window_sample(agent_id)
        lying = upload(agent, meta.model_copy(update={"size": meta.size + 1}), blob)
        assert lying.status_code == 422
        assert "bytes" in lying.json()["detail"]

        bad_meta = agent.post(
            "/api/v1/samples",
            data={"meta": '{"schema": 1}'},
            files={"blob": ("b", b"x", "application/octet-stream")},
        )
        assert bad_meta.status_code == 422
        assert "sample metadata" in bad_meta.json()["detail"]
        assert samples_of(api, agent_id=agent_id) == []


def test_an_agent_uploads_and_reads_only_its_own_samples(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    other_id, other = agent_client(api)
    meta, blob = window_sample(other_id)
    assert upload(agent, meta, blob).status_code == 403
    assert upload(other, meta, blob).status_code == 201
    assert agent.get(f"/api/v1/samples/{meta.id}/blob").status_code == 403
    assert agent.get("/api/v1/samples", params={"agent_id": other_id}).status_code == 403
    reader = client_as(api, new_api_key(api, "read"))
    assert upload(reader, *window_sample(agent_id)).status_code == 403


def test_feedback_labels_the_events_samples(api: TestClient, publisher: Publisher) -> None:
    agent_id, agent = agent_client(api)
    batch = make_batch(agent_id, 2, label="bearing_outer_race")
    publisher.publish(topic(agent_id, Channel.EVENTS), encode(batch))
    wait_until(
        lambda: len(api.get("/api/v1/events", params={"agent_id": agent_id}).json()["items"]) == 2,
        what="the events stored",
    )
    alarm, confirmed = batch.events
    before, blob = window_sample(agent_id, reason="event", event_id=alarm.id, label=alarm.label)
    assert upload(agent, before, blob).status_code == 201
    # Another agent naming this event gets none of its verdicts, before or after them.
    other_id, other = agent_client(api)
    borrowing, blob = window_sample(other_id, seed=5, reason="event", event_id=alarm.id)
    assert upload(other, borrowing, blob).status_code == 201

    operator = client_as(api, new_api_key(api, "operate", name="alice"))
    verdict = operator.post(f"/api/v1/events/{alarm.id}/feedback", json={"verdict": "false_alarm"})
    assert verdict.status_code == 201, verdict.text
    assert verdict.json()["author"] == "alice"
    assert verdict.json()["samples_labelled"] == 1
    # A sample of the event that arrives after the verdict is labelled by it too.
    after, blob = window_sample(agent_id, seed=3, reason="event", event_id=alarm.id)
    assert upload(agent, after, blob).status_code == 201

    labelled = samples_of(api, label="normal", source="person", agent_id=agent_id)
    assert {item["id"] for item in labelled} == {before.id, after.id}
    late, blob = window_sample(other_id, seed=6, reason="event", event_id=alarm.id)
    assert upload(other, late, blob).status_code == 201
    assert samples_of(api, source="person", agent_id=other_id) == []
    person = [lab for lab in labelled[0]["labels"] if lab["source"] == "person"]
    assert [(p["author"], p["verdict"], p["model"]) for p in person] == [
        ("alice", "false_alarm", None)
    ]

    ok = operator.post(f"/api/v1/events/{confirmed.id}/feedback", json={"verdict": "confirmed"})
    assert ok.json()["label"] == "bearing_outer_race"
    relabel = {"verdict": "relabel", "label": "misalignment"}
    assert operator.post(f"/api/v1/events/{alarm.id}/feedback", json=relabel).status_code == 201
    assert len(samples_of(api, label="misalignment", source="person")) == 2

    reader = client_as(api, new_api_key(api, "read"))
    assert reader.post(f"/api/v1/events/{alarm.id}/feedback", json=relabel).status_code == 403
    unknown = operator.post(f"/api/v1/events/{before.id}/feedback", json=relabel)
    assert unknown.status_code == 404
    no_label = operator.post(f"/api/v1/events/{alarm.id}/feedback", json={"verdict": "relabel"})
    assert no_label.status_code == 422


def cloud_labels(api: TestClient, labels: list[tuple[str, str]]) -> None:
    """Cloud answers, stored as the escalation runner stores them: (sample id, label)."""
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        for sample_id, label in labels:
            session.add(
                SampleLabelRow(
                    sample_id=sample_id, label=label, source="cloud", author="cloud",
                    verdict=None, model="vibration-large 2.0.0", created_at=utcnow(),
                )
            )  # fmt: skip
        session.commit()


def review_pages(api: TestClient, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    while True:
        response = api.get("/api/v1/samples/review", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        if response.json()["next_cursor"] is None:
            return pages
        params["cursor"] = response.json()["next_cursor"]


def test_the_review_list_shows_edge_and_cloud_disagreements(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    agree, blob = window_sample(agent_id, label="normal")
    assert upload(agent, agree, blob).status_code == 201
    differ, blob = window_sample(agent_id, seed=2, label="normal")
    assert upload(agent, differ, blob).status_code == 201
    assert review_pages(api, agent_id=agent_id) == [[]]
    cloud_labels(api, [(agree.id, "normal"), (differ.id, "imbalance")])
    ((row,),) = review_pages(api, agent_id=agent_id)
    assert (row["sample"]["id"], row["edge_label"], row["cloud_label"]) == (
        differ.id,
        "normal",
        "imbalance",
    )


def test_the_review_list_pages_with_a_cursor_each_sample_once(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    now = utcnow()
    metas = [
        window_sample(agent_id, seed=n, label="normal", ts=now - timedelta(minutes=n))[0]
        for n in range(5)
    ]
    for meta in metas:
        blob = window_sample(agent_id, seed=metas.index(meta))[1]
        assert upload(agent, meta, blob).status_code == 201
    # Two cloud answers for the newest, both against the edge: still one row, the newest.
    cloud_labels(api, [(m.id, "imbalance") for m in metas] + [(metas[0].id, "misalignment")])

    pages = review_pages(api, agent_id=agent_id, limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    rows = [row for page in pages for row in page]
    assert [row["sample"]["id"] for row in rows] == [m.id for m in metas]  # newest first
    assert (rows[0]["edge_label"], rows[0]["cloud_label"]) == ("normal", "misalignment")
    bad = api.get("/api/v1/samples/review", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 400
    assert "cursor" in bad.json()["detail"]


def test_retention_removes_old_samples_and_their_blobs(api: TestClient) -> None:
    agent_id, agent = agent_client(api)
    old, blob = window_sample(agent_id, ts=utcnow() - timedelta(days=10))
    new, new_blob = window_sample(agent_id, seed=5)
    assert upload(agent, old, blob).status_code == 201
    assert upload(agent, new, new_blob).status_code == 201
    app_state = api.app.state  # type: ignore[attr-defined]
    store = app_state.artifacts
    assert store.path(blob_key(agent_id, old.id)).exists()
    retention = Retention(engine=app_state.engine, days=7, batch=1, interval_s=60, artifacts=store)
    deleted = retention.run_once()
    assert deleted is not None
    assert deleted["samples"] == 1
    assert [item["id"] for item in samples_of(api, agent_id=agent_id)] == [new.id]
    assert not store.path(blob_key(agent_id, old.id)).exists()
    assert store.path(blob_key(agent_id, new.id)).exists()
