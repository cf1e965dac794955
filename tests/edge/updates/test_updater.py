"""The updater thread on real files, real ORT sessions and a local HTTP server for the artifacts:
the swap, what it reports, restarts, and a desired state that no longer lists a pipeline."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest

from edge_agent.agent import Agent
from edge_agent.updates.store import STATE_FILE, read_state
from shared.messages import ModelRef
from tests.edge.updates.rollout import (
    PIPELINE,
    Rollout,
    installed_and_stopped,
    last,
    settled,
    stored_events,
    update_while_running,
    wait_until,
)
from tests.model_fixtures import MODEL_NAME, SHIPPED_MODEL, write_same_model


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
