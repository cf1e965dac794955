"""The updates dir: old versions pruned, names that could leave it refused, the state file
that survives restarts, and the refusals it remembers."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.updates.store import (
    REFUSED_KEPT,
    STATE_FILE,
    Installed,
    PipelineUpdates,
    UpdaterState,
    folder_problem,
    read_state,
    refusal_key,
    renamed,
    write_state,
)
from shared.messages import UpdateStatus, utcnow
from shared.signing import ModelManifest, SignedManifest, sign
from tests.edge.updates.rollout import Rollout, last, reached, refused, wait_until
from tests.model_fixtures import MODEL_NAME, sign_manifest, write_same_model


def test_only_the_last_versions_are_kept(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config(keep_versions=2)
    updater = rollout.updater(config, rollout.pipeline(config))
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        entry = rollout.publish(version, write_same_model(tmp_path / f"{version}.onnx", version))
        updater.submit(rollout.desired(entry))
        wait_until(reached(updater, version, "running"), f"version {version}")
    kept = sorted(d.name for d in (config.updates_dir / MODEL_NAME).iterdir())
    assert kept == ["1.2.0", "1.3.0"]


def test_names_that_could_leave_the_updates_dir_are_refused(
    rollout: Rollout, tmp_path: Path
) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    good = sign_manifest(path, MODEL_NAME, "1.1.0", rollout.key)
    evil = sign(good.manifest.model_copy(update={"version": "../../etc"}), rollout.key)
    reason = refused(rollout, rollout.publish("1.1.0", path, evil))
    assert reason == "model name or version '../../etc' cannot name a directory"
    assert last(rollout.updaters[0]).version == ".._.._etc"  # a status can carry it
    assert rollout.server.requests == []


def manifest(name: str, version: str) -> ModelManifest:
    return ModelManifest(name=name, version=version, sha256="0" * 64, size=1, inputs=[], outputs=[])


@pytest.mark.parametrize("version", ["1.1.0", "2026-12-03", "rc:2_b"])
def test_names_of_letters_digits_and_dots_name_a_folder(version: str) -> None:
    assert folder_problem(manifest("vibration-anomaly", version)) is None


@pytest.mark.parametrize("bad", [".", "..", "../x", "a/b", "a\\b", "a b", "", "é"])
def test_other_names_are_refused_and_renamed_to_what_a_status_carries(bad: str) -> None:
    for name, version in ((bad, "1.0.0"), ("model", bad)):
        signed = SignedManifest(manifest=manifest(name, version), signature="", key_id="")
        assert folder_problem(signed.manifest) == (
            f"model name or version {bad!r} cannot name a directory"
        )
        safe = renamed(signed).manifest
        assert folder_problem(safe) is None
        UpdateStatus(name=safe.name, version=safe.version, state="failed", ts=utcnow())


def test_state_file_round_trips_and_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    state = UpdaterState()
    state.pipelines["spindle"] = PipelineUpdates(
        active=Installed(name="m", version="1.1.0", sha256="a" * 64, deployment_id=7)
    )
    write_state(path, state)
    assert read_state(path) == state
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary file left


def test_missing_or_unreadable_state_file_is_an_empty_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert read_state(tmp_path / STATE_FILE) == UpdaterState()
    assert caplog.records == []
    broken = tmp_path / "broken.json"
    broken.write_text('{"pipelines": {"spindle": {"active": 3}}}')
    assert read_state(broken) == UpdaterState()
    assert "ignoring unreadable update state" in caplog.text


def test_a_pipeline_remembers_only_its_latest_refusals() -> None:
    ps = PipelineUpdates()
    for n in range(REFUSED_KEPT + 5):
        ps.refuse(refusal_key(n, "f" * 64))
    assert len(ps.refused) == REFUSED_KEPT
    assert ps.refused[0] == refusal_key(5, "f" * 64)
    assert ps.refused[-1] == refusal_key(REFUSED_KEPT + 4, "f" * 64)
