"""A scene-detector job in the real app, on a camera that now watches its street at night:
the edge detector, trained on daylight streets, misses half the objects there, and escalates
its unsure frames. The frames are uploaded as samples, the shipped cloud detector answers
the escalations on the real broker, and a training job fine-tunes the shipped edge detector
on the cloud's boxes, evaluates it against the serving version on the held-out frames and
on the shipped (daylight) test streets, and registers it with its report and lineage (each
box's provenance in the frozen dataset). The candidate finds more of the night's objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from cloud_api.training.tables import DatasetVersionRow
from cloud_api.training.trainers import TRAINERS, ImageTrainer
from cloud_api.training.worker import TrainingWorker, training_context
from edge_agent.inference.postprocess import Detection
from edge_agent.inference.runtime import Runtime
from edge_agent.pipelines.privacy import PrivacyConfig, images_that_leave
from edge_agent.sources.synthetic_scene import CLASSES, SyntheticScene
from models import detector
from models.scenes import (
    FRAME_H,
    FRAME_W,
    LabelledFrame,
    labelled_frame,
    labelled_frames,
    random_scene,
)
from shared.errors import ContractError
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.escalation_helpers import MODELS, Results
from tests.cloud.helpers import Publisher, client_as, topic, unique_agent_id
from tests.cloud.image_escalation_helpers import CAMERA, Shot, image_escalation, register_detector
from tests.cloud.sample_helpers import image_sample, upload
from tests.cloud.test_auth import enroll
from tests.cloud.training.fleet import split_id
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = "scene-detector"
FRAMES = 32
NIGHT = 0.2
"""The night's light, as a share of the day's the detectors were trained in (0.55-1.35)."""
OPTIONS = {"steps": 100, "replay_scenes": 20}
"""Small enough for a test on two shared cores; the defaults train 300 steps."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the job's SQL is the windows' (tested on both); the cost is the training."""
    return f"sqlite:///{tmp_path / 'cloud.db'}"


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    """The app with its escalation runner; the shipped edge detector registered as the
    serving version and the shipped cloud detector as the camera pipeline's cloud model."""
    with make_api(training_enabled=False) as client:
        client.app.state.escalations.wait_connected()  # type: ignore[attr-defined]
        register_detector(client)
        with (MODELS / "detector-1.0.0.onnx").open("rb") as file:
            response = client.post(
                f"/api/v1/models/{BASE}/versions",
                data={"version": "1.0.0", "task": "detection", "labels": ",".join(CLASSES)},
                files={"file": ("model.onnx", file, "application/octet-stream")},
            )
        assert response.status_code == 201, response.text
        yield client


def night(seed: int, index: int) -> LabelledFrame:
    """One instant of a random street at night: the lighting at ``NIGHT`` of the day's."""
    rng = np.random.default_rng([seed, index])
    street = random_scene(rng, seed * 100_000 + index)
    dark = SyntheticScene(
        width=FRAME_W, height=FRAME_H, seed=street.seed, actors=street.actors,
        noise_std=street.noise_std, lighting=[(-1.0, NIGHT)],
    )  # fmt: skip
    return labelled_frame(dark, float(rng.uniform(3.0, 20.0)))


def street_frames(count: int, seed: int = 44) -> list[tuple[Shot, LabelledFrame]]:
    """Night frames of streets neither detector saw, each with objects the edge reported as
    unsure (so it escalated the frame), cut by the edge's own privacy encoder; with their
    truth (the JPEG's pixels, the scene's boxes)."""
    shots: list[tuple[Shot, LabelledFrame]] = []
    for index in range(4 * count):
        frame = night(seed, index)
        unsure = [
            Detection(CLASSES[int(label)], 0.5, tuple(float(v) for v in box))  # type: ignore[arg-type]
            for box, label in zip(frame.boxes, frame.labels, strict=True)
        ]
        if unsure:
            [(jpeg, info)] = images_that_leave(PrivacyConfig(images="frames"), frame.image, unsure)
            image = np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
            truth = LabelledFrame(image, frame.boxes, frame.labels, frame.visible)
            shots.append((Shot(jpeg, info, unsure[0].label), truth))
        if len(shots) == count:
            return shots
    raise AssertionError(f"the streets hold fewer than {count} frames with objects")


def collect(
    api: TestClient, publisher: Publisher, broker: Mosquitto, shots: list[tuple[Shot, Any]]
) -> str:
    """A camera agent uploads ``shots`` as samples and escalates each (linked by the sample's
    id); returns the agent's id once the cloud answered every one."""
    agent_id = unique_agent_id("cam")
    agent = client_as(api, basic=(agent_id, enroll(api, agent_id)))
    results = Results(broker.port, agent_id)
    try:
        for index, (shot, _) in enumerate(shots):
            meta, blob = image_sample(agent_id, shot.jpeg, width=shot.info.width,
                                      height=shot.info.height)  # fmt: skip
            meta = meta.model_copy(
                update={"id": split_id(index % 4 == 0), "pipeline": CAMERA,
                        "reason": "escalated", "image": shot.info},
            )  # fmt: skip
            response = upload(agent, meta, blob)
            assert response.status_code == 201, response.text
            escalation = image_escalation(agent_id, shot, sample_id=meta.id)
            publisher.publish(topic(agent_id, Channel.ESCALATIONS), encode(escalation))
        answers = results.wait(len(shots))
    finally:
        results.close()
    assert all(result.outcome == "answered" for result in answers)
    return agent_id


def run_job(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/v1/training-jobs", json=body)
    assert response.status_code == 201, response.text
    state = api.app.state  # type: ignore[attr-defined]
    context = training_context(
        state.settings, sessions=state.sessionmaker, store=state.artifacts,
        signing_key=state.signing_key,
    )  # fmt: skip
    TrainingWorker(context).run_once()
    done: dict[str, Any] = api.get(f"/api/v1/training-jobs/{response.json()['id']}").json()
    return done


def test_a_fine_tune_on_the_clouds_boxes_finds_more_at_night_and_is_registered(
    api: TestClient, publisher: Publisher, broker: Mosquitto
) -> None:
    shots = street_frames(FRAMES)
    agent_id = collect(api, publisher, broker, shots)
    done = run_job(
        api,
        {
            "pipeline": CAMERA, "trainer": "scene-detector", "base_model": BASE,
            "base_version": "1.0.0", "version": "1.1.0", "selector": {"agents": [agent_id]},
            "options": OPTIONS, "gate": {"require_false_alarm_drop": False},
        },
    )  # fmt: skip
    assert done["state"] == "succeeded", done["reason"]
    assert done["result_version"] == "1.1.0"
    assert any(line.endswith("held out) on cpu") for line in done["logs"]), done["logs"]
    sets = done["report"]["sets"]
    assert set(sets) == {"held_out", "shipped"}
    assert sets["shipped"]["base"]["windows"] == 300  # the card's held-out streets
    held_out = sets["held_out"]
    assert held_out["base"]["windows"] == FRAMES // 4
    # Against the cloud's boxes on the held-out night frames, and against the truth.
    assert held_out["candidate"]["recall"] > held_out["base"]["recall"]
    artifact = api.get(f"/api/v1/models/{BASE}/versions/1.1.0/artifact")
    assert artifact.status_code == 200
    night_truth = [truth for index, (_, truth) in enumerate(shots) if index % 4 == 0]
    before = detector.quality((MODELS / "detector-1.0.0.onnx").read_bytes(), night_truth)
    after = detector.quality(artifact.content, night_truth)
    assert before.recall is not None
    assert after.recall is not None
    assert after.recall > before.recall

    version = api.get(f"/api/v1/models/{BASE}/versions/1.1.0")
    assert version.status_code == 200, version.text
    assert version.json()["labels"] == list(CLASSES)
    lineage = api.get(f"/api/v1/models/{BASE}/versions/1.1.0/lineage").json()
    assert lineage["parent_version"] == "1.0.0"
    assert lineage["report"]["passed"] is True
    assert lineage["dataset"]["label_sources"] == ["person", "cloud"]
    assert lineage["dataset"]["counts"]["samples"] == FRAMES
    # Each frame's boxes keep their provenance: the cloud model version, escalation and score.
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        frozen = session.get(DatasetVersionRow, lineage["dataset"]["id"])
        assert frozen is not None
        manifest = frozen.manifest
    assert {entry["source"] for entry in manifest} == {"cloud"}
    assert {entry["model"] for entry in manifest} == {"scene-detector-cloud 1.0.0"}
    assert all(entry["escalation"] for entry in manifest)
    assert sum(bool(entry["boxes"]) for entry in manifest) > FRAMES // 2
    assert all(0.35 <= box["score"] <= 1.0 for entry in manifest for box in entry["boxes"])


def test_frames_the_cloud_never_answered_end_the_job_failed_with_the_reason(
    api: TestClient, publisher: Publisher, broker: Mosquitto
) -> None:
    agent_id = unique_agent_id("cam")
    agent = client_as(api, basic=(agent_id, enroll(api, agent_id)))
    for shot, _ in street_frames(3):
        meta, blob = image_sample(agent_id, shot.jpeg, width=shot.info.width,
                                  height=shot.info.height)  # fmt: skip
        meta = meta.model_copy(update={"pipeline": CAMERA, "image": shot.info})
        assert upload(agent, meta, blob).status_code == 201
    body = {
        "pipeline": CAMERA, "trainer": "scene-detector", "base_model": BASE,
        "base_version": "1.0.0", "selector": {"agents": [agent_id]},
    }  # fmt: skip
    done = run_job(api, body)
    assert done["state"] == "failed"
    assert done["reason"] == (
        "the dataset is empty: no frame of the selector has a cloud answer "
        "(left out: 3 no answer from the cloud model)"
    )
    assert done["result_version"] is None
    people_only = run_job(api, {**body, "selector": {"label_sources": ["person"]}})
    assert people_only["state"] == "failed"
    assert "must include 'cloud'" in people_only["reason"]
    [base] = [model for model in api.get("/api/v1/models").json() if model["name"] == BASE]
    assert [v["version"] for v in base["versions"]] == ["1.0.0"]


def test_the_jobs_options_reach_the_fine_tune_and_bad_ones_are_named() -> None:
    trainer = TRAINERS["scene-detector"]
    assert isinstance(trainer, ImageTrainer)
    options = trainer.parse_options({"steps": 2, "replay_scenes": 1, "learning_rate": 1e-3})
    frames = [f for f in labelled_frames(44, 4, 1) if len(f.labels)]
    model = trainer.train((MODELS / "detector-1.0.0.onnx").read_bytes(), frames, BASE, "9", options)
    assert Runtime(model).output_shapes == {"output0": (1, 4 + len(CLASSES), 1600)}
    with pytest.raises(ContractError, match=r"options\.steps"):
        trainer.parse_options({"steps": 0})
    with pytest.raises(ContractError, match=r"options\.epochs"):
        trainer.parse_options({"epochs": 3})
