"""The updater on real files, real ORT sessions and a local HTTP server for the artifacts."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import generate_latest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.outbox import Outbox
from edge_agent.sources.simulated_machine import MachineSpec, SimulatedMachine
from edge_agent.updates.store import STATE_FILE, read_state
from shared.errors import ModelError
from shared.messages import DesiredModel, ModelRef
from shared.signing import sign
from tests.edge.updates.rollout import (
    PIPELINE,
    Rollout,
    last,
    reached,
    settled,
    stored_events,
    update_while_running,
    wait_until,
)
from tests.model_fixtures import (
    MODEL_NAME,
    SHIPPED_MODEL,
    sign_manifest,
    write_nan_model,
    write_same_model,
    write_slow_model,
)

# -- the happy path ---------------------------------------------------------------------------


def test_swap_keeps_every_window_once_and_events_name_the_model_that_ran(
    rollout: Rollout, tmp_path: Path
) -> None:
    config = rollout.config(speed=20.0, health_window_s=0.5)
    new_model = write_same_model(tmp_path / "v110.onnx", "1.1.0")
    live = update_while_running(rollout, config, "1.1.0", new_model, workdir=tmp_path,
                                windows_after=20)  # fmt: skip
    pipeline, updater, entry, outbox = live.pipeline, live.updater, live.entry, live.outbox
    old = live.old.ref
    assert last(updater).state == "running", last(updater).reason
    assert rollout.states == [
        "downloading", "verifying", "loading", "self_test", "watching", "running",
    ]  # fmt: skip
    new = pipeline.slot.current().ref
    assert (new.version, new.sha256) == ("1.1.0", entry.manifest.manifest.sha256)
    events = stored_events(outbox)
    # One event per window: every seq once, in order, none missing around the swap.
    assert [e.seq for e in events] == list(range(len(events)))
    assert len(events) == pipeline.counters.samples_in
    refs = [e.model for e in events]
    switch = refs.index(new)
    assert switch > 0
    assert set(refs[:switch]) == {old}
    assert set(refs[switch:]) == {new}
    assert last(updater).deployment_id == entry.deployment_id
    state = read_state(config.updates_dir / STATE_FILE).pipelines[PIPELINE]
    assert state.active is not None
    assert state.active.version == "1.1.0"
    assert state.pending is None
    assert (config.updates_dir / MODEL_NAME / "1.1.0" / "model.onnx").exists()
    assert (config.updates_dir / MODEL_NAME / "1.1.0" / "manifest.json").exists()
    assert updater.counters.outcomes["running"] == 1


def test_entry_equal_to_what_runs_is_reported_running_without_a_download(
    rollout: Rollout,
) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish("1.0.0", SHIPPED_MODEL)
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running"), "running")
    assert rollout.server.requests == []
    assert (last(updater).deployment_id, last(updater).version) == (100, "1.0.0")


# -- refusals: the old model runs on ------------------------------------------------------------


def refused(rollout: Rollout, entry: DesiredModel, config: AgentConfig | None = None) -> str:
    """Submit ``entry`` and return the reason it failed; the shipped model still runs."""
    config = config or rollout.config()
    pipeline = rollout.pipeline(config)
    old = pipeline.slot.current()
    updater = rollout.updater(config, pipeline)
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "failed", "running"), "the refusal")
    assert last(updater).state == "failed"
    assert pipeline.slot.current() is old
    assert updater.counters.outcomes["failed"] == 1
    return last(updater).reason


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


def test_download_gives_up_after_its_tries(rollout: Rollout, tmp_path: Path) -> None:
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    rollout.server.fail_next = 100
    reason = refused(rollout, entry, rollout.config(retries=3))
    assert reason.startswith("download failed after 3 tries: HTTP 503")
    assert len(rollout.server.requests) == 3


# -- downloads ----------------------------------------------------------------------------------


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


# -- health window --------------------------------------------------------------------------------


def test_model_failing_at_inference_is_rolled_back(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config(speed=20.0, health_window_s=30)
    nan_model = write_nan_model(tmp_path / "nan.onnx", "1.2.0")
    live = update_while_running(rollout, config, "1.2.0", nan_model, workdir=tmp_path)
    pipeline, updater, entry, old = live.pipeline, live.updater, live.entry, live.old
    status = last(updater)
    assert status.state == "rolled_back", status.reason
    assert re.match(r"\d+ inference errors in the health window: ", status.reason)
    assert "not finite" in status.reason
    assert pipeline.slot.current() is old
    assert rollout.states[-2:] == ["watching", "rolled_back"]
    events = stored_events(live.outbox)
    assert {e.model for e in events} == {old.ref}
    assert pipeline.counters.inference_errors >= 1
    # The refused entry is not tried again while it stays the same.
    updater.submit(rollout.desired(entry))
    time.sleep(0.3)
    assert last(updater).state == "rolled_back"


def test_nan_output_is_an_inference_error_not_an_event(tmp_path: Path, rollout: Rollout) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    nan = write_nan_model(tmp_path / "nan.onnx", "1.2.0")
    spec_config = config.pipelines[0].model.model_copy(update={"path": nan, "version": "1.2.0"})
    pipeline.slot.swap(load_slot(spec_config, RuntimeConfig()).current())
    window = SimulatedMachine(MachineSpec(), seed=1).window()
    with pytest.raises(ModelError, match="not finite"):
        pipeline.process_windows(window)
    assert pipeline.counters.events_out == 0


def test_a_score_beyond_the_contract_is_an_inference_error_and_the_pipeline_goes_on(
    tmp_path: Path, rollout: Rollout
) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    huge = write_nan_model(tmp_path / "huge.onnx", "1.3.0", value=-1e12)  # score 1 + 1e12
    spec_config = config.pipelines[0].model.model_copy(update={"path": huge, "version": "1.3.0"})
    pipeline.slot.swap(load_slot(spec_config, RuntimeConfig()).current())
    outbox = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=1e9)
    pipeline.run(outbox, threading.Event())  # returns: the source ended, nothing raised
    assert pipeline.counters.inference_errors > 0
    assert pipeline.counters.events_out == 0
    assert outbox.depth() == 0


# -- restarts --------------------------------------------------------------------------------------


def test_restart_during_the_health_window_rolls_back(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config(health_window_s=600)
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "watching", "failed"), "the health window")
    assert pipeline.slot.current().ref.version == "1.1.0"
    updater.stop()  # the agent dies while watching

    again = rollout.pipeline(config)
    restarted = rollout.updater(config, again)
    status = last(restarted)
    assert (status.state, status.version) == ("rolled_back", "1.1.0")
    assert status.reason == "interrupted by a restart during the health window"
    assert again.slot.current().ref.version == "1.0.0"
    restarted.submit(rollout.desired(entry))  # the retained state arrives again
    time.sleep(0.3)
    assert again.slot.current().ref.version == "1.0.0"
    assert last(restarted).state == "rolled_back"


def installed_and_stopped(rollout: Rollout, tmp_path: Path) -> tuple[AgentConfig, DesiredModel]:
    """An agent that installed 1.1.0 (same behaviour, new file), then stopped."""
    config = rollout.config()
    updater = rollout.updater(config, rollout.pipeline(config))
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running", "failed"), "the update")
    assert last(updater).state == "running", last(updater).reason
    updater.stop()
    return config, entry


def test_restart_after_success_loads_the_installed_version(
    rollout: Rollout, tmp_path: Path
) -> None:
    config, entry = installed_and_stopped(rollout, tmp_path)

    again = rollout.pipeline(config)
    restarted = rollout.updater(config, again)
    assert again.slot.current().ref == ModelRef(
        name=MODEL_NAME, version="1.1.0", sha256=entry.manifest.manifest.sha256
    )
    assert last(restarted).state == "running"
    requests = len(rollout.server.requests)
    restarted.submit(rollout.desired(entry))
    time.sleep(0.3)
    assert len(rollout.server.requests) == requests


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


# -- the desired state as a whole -----------------------------------------------------------------


def test_entry_removed_goes_back_to_the_configured_model(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    configured = pipeline.slot.current()
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "running", "failed"), "the update")
    assert pipeline.slot.current() is not configured
    updater.submit(rollout.desired())
    wait_until(lambda: pipeline.slot.current() is configured, "the configured model")
    status = last(updater)
    assert (status.state, status.version, status.deployment_id) == ("running", "1.0.0", None)
    state = read_state(config.updates_dir / STATE_FILE).pipelines[PIPELINE]
    assert state.active is None


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


def test_agent_reports_the_update_in_status_and_metrics(rollout: Rollout, tmp_path: Path) -> None:
    # The broker URL points nowhere: updates do not need the uplink once the state is in.
    config = rollout.config(speed=20.0, mqtt={"url": "mqtt://127.0.0.1:1"})
    agent = Agent(config)
    agent.start()
    try:
        assert agent.updater is not None
        entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
        agent.updater.submit(rollout.desired(entry))
        wait_until(lambda: agent.pipelines[0].slot.current().ref.version == "1.1.0", "the swap")
        wait_until(settled(agent.updater, "running"), "running")
        status = agent.status()
        metrics = generate_latest(agent.registry).decode()
    finally:
        agent.stop()
    (pipeline,) = status.pipelines
    assert pipeline.model is not None
    assert pipeline.model.version == "1.1.0"
    assert pipeline.update is not None
    assert (pipeline.update.state, pipeline.update.deployment_id) == ("running", 110)
    assert 'aiot_edge_model_updates_total{outcome="running"} 1.0' in metrics
    assert 'aiot_edge_model_updates_total{outcome="failed"} 0.0' in metrics
    assert "aiot_edge_model_swaps_total 1.0" in metrics


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


def test_model_much_slower_than_the_previous_is_rolled_back(
    rollout: Rollout, tmp_path: Path
) -> None:
    # Two 2048x2048 products per window against a ~0.1 ms model: far beyond the 3x allowed.
    config = rollout.config(speed=20.0, health_window_s=1.0)
    slow_model = write_slow_model(tmp_path / "slow.onnx", "1.4.0")
    live = update_while_running(rollout, config, "1.4.0", slow_model, workdir=tmp_path,
                                windows_after=0)  # fmt: skip
    pipeline, updater, old = live.pipeline, live.updater, live.old
    status = last(updater)
    assert status.state == "rolled_back", status.reason
    assert status.reason.startswith("median inference time ")
    assert "over 3 x the previous model's" in status.reason
    assert pipeline.slot.current() is old
    assert pipeline.counters.inference_errors == 0
