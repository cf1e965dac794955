"""Image escalations in the real app: JPEG crops and frames of synthetic streets, cut by the
edge's own privacy encoder, published on the real broker, answered on ``escalations/result``
by the shipped cloud detector (``scene-detector-cloud``) in ONNX Runtime, in batches (a
batch against images alone is tested on the runner fed directly: test_escalation_runner.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from cloud_api.escalation.detector import NOTHING
from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.privacy import PrivacyConfig, images_that_leave
from edge_agent.sources.synthetic_scene import SyntheticScene
from shared.escalations import Escalation
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.escalation_helpers import Results
from tests.cloud.helpers import Publisher, topic, unique_agent_id
from tests.cloud.image_escalation_helpers import (
    Shot,
    crops,
    image_escalation,
    in_image,
    register_detector,
)
from tests.services import Mosquitto


@contextmanager
def running(make_api: AppFactory, **changes: object) -> Iterator[TestClient]:
    """The app with its runner subscribed and the cloud detector set for the camera."""
    with make_api(**changes) as client:
        client.app.state.escalations.wait_connected()  # type: ignore[attr-defined]
        register_detector(client)
        yield client


def send(publisher: Publisher, *escalations: Escalation) -> None:
    for one in escalations:
        publisher.publish(topic(one.agent_id, Channel.ESCALATIONS), encode(one))


def test_crops_are_answered_with_their_objects_label(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("cam")
    shots = crops(12)
    assert {s.truth for s in shots} == {"car", "person"}
    results = Results(broker.port, agent)
    try:
        with running(make_api) as api:
            sent = [image_escalation(agent, s) for s in shots]
            send(publisher, *sent)
            got = {r.escalation_id: r for r in results.wait(len(sent))}
            for escalation, shot in zip(sent, shots, strict=True):
                result = got[escalation.id]
                assert result.outcome == "answered", result.reason
                assert result.model is not None
                assert result.model.name == "scene-detector-cloud"
                assert result.label == shot.truth
                assert result.score is not None
                assert result.score >= 0.35
                assert result.detections, "the answer carries what the detector saw"
                assert all(in_image(d.box, shot.info) for d in result.detections)
            # The edge said the same label: agreement, counted and shown in the figures.
            stats = api.get("/api/v1/escalations/stats", params={"agent_id": agent}).json()
            [row] = stats["pipelines"]
            assert (row["answered"], row["agreement"]) == (len(sent), 1.0)
    finally:
        results.close()


def test_bad_images_are_refused_with_their_reason_and_neighbours_answered(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    agent = unique_agent_id("cam")
    shot = crops(1)[0]
    results = Results(broker.port, agent)
    try:
        with running(make_api):
            not_jpeg = image_escalation(agent, shot, data=b"not a jpeg at all")
            broken = image_escalation(agent, shot, data=shot.jpeg[:2] + b"\x00" * 200)
            resized = shot.info.model_copy(update={"width": shot.info.width + 7})
            wrong_size = image_escalation(agent, shot, image=resized)
            ok = image_escalation(agent, shot)
            send(publisher, not_jpeg, broken, wrong_size, ok)
            got = {r.escalation_id: r for r in results.wait(4)}
            assert got[not_jpeg.id].outcome == "refused"
            assert "not a JPEG" in got[not_jpeg.id].reason
            assert got[broken.id].outcome == "refused"
            assert "not a JPEG that decodes" in got[broken.id].reason
            assert "the escalation declares" in got[wrong_size.id].reason
            assert got[ok.id].outcome == "answered"
    finally:
        results.close()


def test_an_empty_street_is_answered_as_nothing(
    make_api: AppFactory, publisher: Publisher, broker: Mosquitto
) -> None:
    """The edge was unsure of a 'person' on an empty pavement: the cloud sees nothing there."""
    agent = unique_agent_id("cam")
    street = SyntheticScene(seed=7).render(5.0)
    ghost = Detection("person", 0.5, (300.0, 150.0, 330.0, 230.0))
    [(jpeg, info)] = images_that_leave(PrivacyConfig(images="crops"), street, [ghost])
    results = Results(broker.port, agent)
    try:
        with running(make_api):
            one = image_escalation(agent, Shot(jpeg, info, "person"))
            send(publisher, one)
            [result] = results.wait(1)
            assert result.outcome == "answered"
            assert (result.label, result.score, result.detections) == (NOTHING, 0.0, [])
    finally:
        results.close()
