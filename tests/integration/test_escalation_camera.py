"""Image escalation end to end: a real agent's camera pipeline (the shipped edge detector on
a synthetic street, ``images: crops``) escalates its detections to the real API, whose runner
answers with the shipped cloud detector; each answer comes back as a reconciled event.

What left the agent is checked where it left: every escalation on the broker and every
sample the API stored is a crop (region, box, and decoded pixels smaller than the frame),
never a whole frame; and each answer links back to the edge's object event and kept sample.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli.broker import free_port
from cloud_api.config import Settings
from edge_agent.agent import Agent
from shared.escalations import Escalation
from shared.topics import Channel, Topic
from tests.cloud.image_escalation_helpers import DETECTOR, register_detector
from tests.edge.test_agent_mqtt import Subscriber
from tests.integration.test_escalation_loop import pages
from tests.integration.test_rollout import wait_for
from tests.integration.test_samples import agent_config, camera, enroll, run_to_the_end, serve
from tests.integration.test_samples import settings as settings  # the fixture
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

FRAME = (360, 640)
"""The synthetic scene's frame (height, width)."""


def check_crop(blob: bytes, box: Sequence[float] | None) -> None:
    """``blob`` decodes to exactly the pixels of ``box`` (the crop's place in the frame),
    which are less than the whole frame."""
    assert box is not None, "a crop names its place in the frame"
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "a JPEG that does not decode"
    left, top, right, bottom = box
    assert image.shape[:2] == (bottom - top, right - left)
    assert image.shape[0] * image.shape[1] < FRAME[0] * FRAME[1] / 4, "more than a crop left"


def escalations_sent(subscriber: Subscriber, agent_id: str) -> dict[str, Escalation]:
    """Every escalation the agent published, as the broker delivered it, by id (read once
    the subscriber is closed)."""
    topic = str(Topic(agent_id, Channel.ESCALATIONS))
    sent = [Escalation.model_validate_json(p) for t, p, _ in subscriber.messages if t == topic]
    return {e.id: e for e in sent}


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
        subscriber = Subscriber(broker, agent_id)
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
            subscriber.close()
        answers = pages(cloud, "/api/v1/escalations", agent_id=agent_id)
        events = pages(cloud, "/api/v1/events", agent_id=agent_id)
        samples = pages(cloud, "/api/v1/samples", agent_id=agent_id)
        blobs = {s["id"]: cloud.http.get(s["blob_url"]).content for s in samples}

    assert len(answers) == sent
    assert {a["outcome"] for a in answers} == {"answered"}
    assert all(a["cloud_model"].startswith(DETECTOR) for a in answers)
    assert final.escalations_refused == 0
    # The cloud names the object the edge saw: the same label for nearly every crop.
    agreed = sum(1 for a in answers if a["agree"])
    assert final.escalations_agreed == agreed
    assert agreed >= 0.9 * sent
    reconciled = {e["attributes"]["escalation_id"]: e for e in events if e["kind"] == "escalation"}
    assert set(reconciled) == {a["id"] for a in answers}

    # Only crops left the agent: on the broker ...
    published = escalations_sent(subscriber, agent_id)
    assert set(published) == set(reconciled)
    for escalation in published.values():
        assert escalation.kind == "image"
        assert escalation.image is not None
        assert (escalation.image.region, escalation.privacy.images) == ("crop", "crops")
        check_crop(escalation.input_bytes(), escalation.image.box)
    # ... and over HTTP.
    assert samples
    for sample in samples:
        assert sample["meta"]["image"]["region"] == "crop"
        check_crop(blobs[sample["id"]], sample["meta"]["image"]["box"])

    # Each answer links to the edge's object event and to the sample kept of its input.
    objects = {e["id"] for e in events if e["kind"] == "object"}
    kept = {s["id"]: s for s in samples if s["reason"] == "escalated"}
    for answer in answers:
        attributes = reconciled[answer["id"]]["attributes"]
        assert attributes.get("edge_event_id") == answer["event_id"]
        assert attributes.get("sample_id") == answer["sample_id"]
        if answer["event_id"] is not None:
            assert answer["event_id"] in objects
        if answer["sample_id"] is not None:  # the very crop that was escalated
            image = published[answer["id"]].image
            assert image is not None
            assert tuple(kept[answer["sample_id"]]["meta"]["image"]["box"]) == image.box
    assert any(a["event_id"] is not None for a in answers), "object starts are escalated"
    assert any(a["sample_id"] is not None for a in answers), "escalated inputs are kept"
