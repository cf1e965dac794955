"""Image escalation end to end: a real agent's camera pipeline (the shipped edge detector on
a synthetic street, ``images: crops``) escalates its detections to the real API, whose runner
answers with the shipped cloud detector; each answer comes back as a reconciled event."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cli.broker import free_port
from cloud_api.config import Settings
from edge_agent.agent import Agent
from tests.cloud.image_escalation_helpers import DETECTOR, register_detector
from tests.integration.test_escalation_loop import pages
from tests.integration.test_rollout import wait_for
from tests.integration.test_samples import agent_config, camera, enroll, run_to_the_end, serve
from tests.integration.test_samples import settings as settings  # the fixture
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def test_a_cameras_unsure_detections_are_answered_by_the_cloud_detector(
    settings: Settings, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"escalation_quota_burst": 100_000})
    with serve(settings, free_port()) as cloud:
        register_detector(cloud.http, "street")
        agent_id = f"cam-{uuid.uuid4().hex[:8]}"
        pipeline = camera("street", {"images": "crops"})
        pipeline["escalate"] = {"band": [0.0, 1.0], "budget_per_min": 10_000}
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

    assert len(answers) == sent
    assert {a["outcome"] for a in answers} == {"answered"}
    assert all(a["cloud_model"].startswith(DETECTOR) for a in answers)
    assert final.escalations_refused == 0
    # The cloud names the object the edge saw: the same label for nearly every crop.
    agreed = sum(1 for a in answers if a["agree"])
    assert final.escalations_agreed == agreed
    assert agreed >= 0.9 * sent
    reconciled = [e for e in events if e["kind"] == "escalation"]
    assert {e["attributes"]["escalation_id"] for e in reconciled} == {a["id"] for a in answers}
