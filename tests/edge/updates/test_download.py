"""Downloads of an artifact through the updater: retries, a resumed cut, a server that ignores
Range, and a download cut by a restart."""

from __future__ import annotations

from pathlib import Path

from edge_agent.updates.store import STATE_FILE, read_state
from tests.edge.updates.rollout import PIPELINE, Rollout, last, refused, settled, wait_until
from tests.model_fixtures import MODEL_NAME, write_same_model


def test_download_gives_up_after_its_tries(rollout: Rollout, tmp_path: Path) -> None:
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    rollout.server.fail_next = 100
    reason = refused(rollout, entry, rollout.config(retries=3))
    assert reason.startswith("download failed after 3 tries: HTTP 503")
    assert len(rollout.server.requests) == 3


def test_cut_download_resumes_with_a_range_request(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    entry = rollout.publish("1.1.0", path)
    rollout.server.cut_next = 1
    rollout.server.fail_next = 0
    config = rollout.config(cloud={"username": "press-3", "password_file": str(secret(tmp_path))})
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running", "failed"), "the update")
    assert last(updater).state == "running", last(updater).reason
    first, second = rollout.server.requests
    assert first.range is None
    assert second.range == f"bytes={path.stat().st_size // 2}-"
    assert all(r.authorization == "Basic cHJlc3MtMzpzM2NyZXQ=" for r in rollout.server.requests)
    installed = config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx"
    assert installed.read_bytes() == path.read_bytes()


def secret(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    return path


def test_server_that_ignores_range_restarts_from_byte_zero(
    rollout: Rollout, tmp_path: Path
) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    entry = rollout.publish("1.1.0", path)
    rollout.server.cut_next = 1
    rollout.server.ignore_range = True
    config = rollout.config()
    updater = rollout.updater(config, rollout.pipeline(config))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running", "failed"), "the update")
    assert last(updater).state == "running", last(updater).reason
    installed = config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx"
    assert installed.read_bytes() == path.read_bytes()


def test_download_cut_by_a_restart_resumes_after_it(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    entry = rollout.publish("1.1.0", path)
    rollout.server.cut_next = 1
    config = rollout.config(retry_backoff_s=600)  # the agent stops while it waits to retry
    updater = rollout.updater(config, rollout.pipeline(config))
    updater.submit(rollout.desired(entry))
    part = config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx.part"
    half = path.stat().st_size // 2
    wait_until(lambda: part.exists() and part.stat().st_size == half, "half the artifact")
    updater.stop()
    pending = read_state(config.updates_dir / STATE_FILE).pipelines[PIPELINE].pending
    assert pending is not None
    assert (pending.version, pending.phase) == ("1.1.0", "downloading")

    again = rollout.pipeline(config)
    restarted = rollout.updater(config, again)
    restarted.submit(rollout.desired(entry))  # the retained state arrives again
    wait_until(settled(restarted, "running", "failed"), "the update")
    assert last(restarted).state == "running", last(restarted).reason
    assert [r.range for r in rollout.server.requests] == [None, f"bytes={half}-"]
    assert again.slot.current().ref.version == "1.1.0"
