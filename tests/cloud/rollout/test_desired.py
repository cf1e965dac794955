"""Desired states: one pipeline's entry replaced, the others kept, the JSON stored as sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cloud_api.rollout.desired import as_json, entry_for, entry_of, with_entry
from shared.messages import DesiredModel, DesiredState, encode
from shared.signing import SignedManifest

PIPELINE = "spindle-vibration"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MANIFEST = json.loads(
    # A real signed manifest shape, from the registry's schema.
    '{"manifest": {"name": "m", "version": "1", "sha256": "' + "0" * 64 + '", "size": 1,'
    ' "inputs": [], "outputs": []}, "signature": "", "key_id": ""}'
)


def model_entry(pipeline: str, deployment_id: int) -> DesiredModel:
    return DesiredModel.model_validate(
        {
            "pipeline": pipeline,
            "deployment_id": deployment_id,
            "manifest": MANIFEST,
            "artifact_path": "/api/v1/models/m/versions/1/artifact",
        }
    )


def test_a_desired_state_keeps_the_other_pipelines() -> None:
    before = with_entry(None, agent_id="a", pipeline="camera", entry=model_entry("camera", 1),
                        issued_at=T0)  # fmt: skip
    after = with_entry(before, agent_id="a", pipeline=PIPELINE, entry=model_entry(PIPELINE, 2),
                       issued_at=T0 + timedelta(seconds=1))  # fmt: skip
    state = DesiredState.model_validate(as_json(after))
    assert [(p.pipeline, p.deployment_id) for p in state.pipelines] == [
        ("camera", 1),
        (PIPELINE, 2),
    ]
    removed = DesiredState.model_validate(
        as_json(with_entry(after, agent_id="a", pipeline="camera", entry=None, issued_at=T0))
    )
    assert [p.pipeline for p in removed.pipelines] == [PIPELINE]


def test_an_entry_asks_for_the_manifests_version_and_its_artifact() -> None:
    entry = entry_for(PIPELINE, 7, SignedManifest.model_validate(MANIFEST))
    assert (entry.pipeline, entry.deployment_id) == (PIPELINE, 7)
    assert entry.artifact_path == "/api/v1/models/m/versions/1/artifact"
    state = with_entry(None, agent_id="a", pipeline=PIPELINE, entry=entry, issued_at=T0)
    assert entry_of(state, PIPELINE) == entry
    assert entry_of(state, "camera") is None
    assert entry_of(None, PIPELINE) is None


def test_what_is_stored_is_what_is_published() -> None:
    """The row's JSON is the wire message's JSON, and reads back as the same values."""
    entry = entry_for(PIPELINE, 7, SignedManifest.model_validate(MANIFEST))
    state = with_entry(None, agent_id="a", pipeline=PIPELINE, entry=entry, issued_at=T0)
    assert as_json(state) == json.loads(encode(state))
    assert DesiredState.model_validate(as_json(state)) == state
    assert DesiredModel.model_validate(as_json(entry)) == entry
