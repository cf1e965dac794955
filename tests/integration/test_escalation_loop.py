"""Escalation end to end with nothing standing in: a real agent, a real broker, the real API
(ingest and the cloud model runner in its lifespan) on SQLite and PostgreSQL, the shipped
edge model at the edge and the shipped bigger model in the cloud.

What an operator would check: every unsure input the agent sent was answered once by the
cloud model; each answer came back as a reconciled event that reached SQL and names the edge
event behind it; both answers label the kept sample; the review list holds exactly the
samples on which edge and cloud disagree.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from cli.broker import free_port
from cloud_api.config import Settings
from edge_agent.agent import Agent
from tests.cloud.escalation_helpers import CLOUD_MODEL, register_cloud_model
from tests.integration.test_rollout import wait_for
from tests.integration.test_samples import (
    Cloud,
    agent_config,
    enroll,
    run_to_the_end,
    serve,
    vibration,
)
from tests.integration.test_samples import settings as settings  # the fixture
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def pages(cloud: Cloud, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = {**params, "limit": 1000}
    while True:
        response = cloud.http.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


def test_unsure_inputs_are_answered_by_the_cloud_model_reconciled_and_labelled(
    settings: Settings, broker: Mosquitto, tmp_path: Path
) -> None:
    # The source runs as fast as it can: hundreds of escalations in seconds, which the cloud's
    # per-agent quota (tested in tests/cloud/test_escalations.py) would refuse in part.
    settings = settings.model_copy(update={"escalation_quota_burst": 100_000})
    with serve(settings, free_port()) as cloud:
        register_cloud_model(cloud.http, "spindle")
        agent_id = f"esc-{uuid.uuid4().hex[:8]}"
        pipeline = vibration("spindle", {"events": True, "before": 0, "after": 0}, 150)
        pipeline["escalate"] = {"band": [0.5, 1.0], "budget_per_min": 10_000}
        config = agent_config(
            agent_id, enroll(cloud, agent_id, tmp_path), broker, tmp_path, pipelines=[pipeline]
        )
        agent = Agent(config)
        agent.start()
        try:
            run_to_the_end(agent)
            sent = agent.status().pipelines[0].escalated
            assert sent > 0
            wait_for(
                lambda: agent.status().pipelines[0].escalations_answered == sent, "every answer"
            )
            wait_for(agent.done, "every event delivered")
            final = agent.status().pipelines[0]
        finally:
            agent.stop()
        answers = pages(cloud, "/api/v1/escalations", agent_id=agent_id)
        events = pages(cloud, "/api/v1/events", agent_id=agent_id)
        samples = pages(cloud, "/api/v1/samples", agent_id=agent_id, reason="escalated")
        review = pages(cloud, "/api/v1/samples/review")

    # Each escalation was run once by the cloud model and answered.
    assert len(answers) == len({a["id"] for a in answers}) == sent
    assert {a["outcome"] for a in answers} == {"answered"}
    assert all(a["cloud_model"].startswith(CLOUD_MODEL) for a in answers)
    assert final.escalations_refused == 0
    assert final.escalations_agreed == sum(1 for a in answers if a["agree"])
    # Each answer is a reconciled event in SQL, linked to the edge event behind its input.
    reconciled = [e for e in events if e["kind"] == "escalation"]
    edge_ids = {e["id"] for e in events if e["kind"] != "escalation"}
    assert len(reconciled) == sent
    by_escalation = {e["attributes"]["escalation_id"]: e for e in reconciled}
    assert set(by_escalation) == {a["id"] for a in answers}
    for answer in answers:
        event = by_escalation[answer["id"]]
        assert event["attributes"]["agree"] == answer["agree"]
        assert event["attributes"]["cloud_label"] == answer["cloud_label"]
        if answer["event_id"] is not None:
            assert event["attributes"]["edge_event_id"] == answer["event_id"] in edge_ids
    assert any(a["event_id"] is not None for a in answers), "incident starts are escalated"
    # Both answers label the kept sample; the disagreements are the review list.
    linked = {a["sample_id"]: a for a in answers if a["sample_id"] is not None}
    assert linked
    assert set(linked) <= {s["id"] for s in samples}
    for sample in samples:
        sources = {label["source"]: label["label"] for label in sample["labels"]}
        if sample["id"] not in linked:  # kept, but its escalation was dropped (counted)
            assert set(sources) == {"edge"}
            continue
        answered = linked[sample["id"]]
        assert sources == {"edge": answered["edge_label"], "cloud": answered["cloud_label"]}
    unsent = len(samples) - len(linked)
    assert unsent <= final.escalations_dropped_offline + final.escalations_dropped_budget
    disagreeing = {sid for sid, a in linked.items() if not a["agree"]}
    assert {row["sample"]["id"] for row in review if row["sample"]["agent_id"] == agent_id} == (
        disagreeing
    )
