"""What the installer refuses before the swap (the old model runs on): signatures, keys, the
artifact's sha256, the pipeline's labels, the golden input, and a changed file after a restart."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.edge.updates.rollout import Rollout, installed_and_stopped, last, refused
from tests.model_fixtures import MODEL_NAME, sign_manifest, write_same_model


def test_tampered_artifact_is_refused_and_not_tried_again(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    entry = rollout.publish("1.1.0", path)
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 0xFF
    rollout.server.files["/api" + entry.artifact_path] = bytes(tampered)
    config = rollout.config()
    reason = refused(rollout, entry, config)
    assert reason.startswith("sha256 of the artifact")
    assert "does not match the signed manifest" in reason
    assert not (config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx").exists()
    # The retained message comes again (a reconnect): the same entry is not fetched again.
    requests = len(rollout.server.requests)
    rollout.updaters[0].submit(rollout.desired(entry))
    time.sleep(0.3)
    assert len(rollout.server.requests) == requests
    assert last(rollout.updaters[0]).state == "failed"


def test_manifest_signed_by_another_key_is_refused(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    other = sign_manifest(path, MODEL_NAME, "1.1.0", Ed25519PrivateKey.generate())
    reason = refused(rollout, rollout.publish("1.1.0", path, other))
    assert "signed by key" in reason
    assert rollout.server.requests == []  # refused before a byte was downloaded


def test_manifest_changed_after_signing_is_refused(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    signed = sign_manifest(path, MODEL_NAME, "1.1.0", rollout.key)
    forged = signed.model_copy(
        update={"manifest": signed.manifest.model_copy(update={"version": "9.9.9"})}
    )
    reason = refused(rollout, rollout.publish("1.1.0", path, forged))
    assert "does not match its content" in reason


def test_agent_without_public_key_refuses_every_update(rollout: Rollout, tmp_path: Path) -> None:
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    reason = refused(rollout, entry, rollout.config(public_key=None))
    assert "no public key configured" in reason


def test_failed_self_test_is_refused(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    honest = sign_manifest(path, MODEL_NAME, "1.1.0", rollout.key)
    golden = honest.manifest.golden_output
    assert golden is not None
    wrong = sign_manifest(path, MODEL_NAME, "1.1.0", rollout.key, golden=[v + 0.5 for v in golden])
    reason = refused(rollout, rollout.publish("1.1.0", path, wrong))
    assert reason.startswith("self-test: ")
    assert "differ from the manifest" in reason


def test_other_labels_are_refused(rollout: Rollout, tmp_path: Path) -> None:
    path = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    labels = ["ok", "a", "b", "c", "d", "e"]
    signed = sign_manifest(path, MODEL_NAME, "1.1.0", rollout.key, labels=labels)
    reason = refused(rollout, rollout.publish("1.1.0", path, signed))
    assert "differ from the pipeline's" in reason


def test_installed_version_changed_on_disk_is_not_loaded_after_restart(
    rollout: Rollout, tmp_path: Path
) -> None:
    config, _ = installed_and_stopped(rollout, tmp_path)
    installed = config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx"
    data = bytearray(installed.read_bytes())
    data[-1] ^= 0xFF
    installed.write_bytes(bytes(data))

    again = rollout.pipeline(config)
    restarted = rollout.updater(config, again)
    assert again.slot.current().ref.version == "1.0.0"
    assert last(restarted).state == "failed"
    assert "sha256 of the artifact" in last(restarted).reason
