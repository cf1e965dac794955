"""Local actions for real: a Mosquitto subscriber, an HTTP server, a command writing a file;
a slow action never blocks the pipeline, and every completion records its latency."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.delivery.action_config import ActionConfig
from edge_agent.delivery.action_workers import Actions
from edge_agent.delivery.actions import ACTIONS, ActionError, CommandAction, MqttAction
from shared.messages import Event, EventState, ModelRef, new_event_id
from tests.edge.conftest import AgentConfigFactory
from tests.services import Mosquitto

ACTION = TypeAdapter(ActionConfig)
CAPTURED_AT = datetime(2026, 11, 22, 10, 15, 2, tzinfo=UTC)


def event(state: EventState = "start", label: str = "impact", pipeline: str = "spindle") -> Event:
    return Event(
        id=new_event_id(),
        pipeline=pipeline,
        kind="anomaly",
        state=state,
        label=label,
        score=0.97,
        ts=CAPTURED_AT,
        seq=42,
        model=ModelRef(name="vibration-anomaly", version="1.0.0", sha256="0" * 64),
    )


def actions(
    *configs: dict[str, Any],
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = lambda: CAPTURED_AT.timestamp() + 0.25,
    **kwargs: Any,
) -> Actions:
    parsed = [ACTION.validate_python(c) for c in configs]
    return Actions(
        "a1", {"spindle": parsed}, registry or CollectorRegistry(), clock=clock, **kwargs
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- command ------------------------------------------------------------------------------

WRITE_ENV = "import os, sys; open(sys.argv[1], 'a').write(os.environ['AIOT_EVENT_STATE'] + ' ' + os.environ['AIOT_EVENT_LABEL'] + ' ' + os.environ['AIOT_EVENT_SCORE'] + '\\n')"  # noqa: E501


def test_command_runs_argv_with_the_event_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    runner = actions(
        {
            "type": "command",
            "argv": [sys.executable, "-c", WRITE_ENV, str(out)],
            "on": ["start", "end"],
        }
    )
    runner.start()
    try:
        runner.submit([event("start"), event("update"), event("end")])
        wait_until(lambda: runner.counters.completed == 2, "two commands")
    finally:
        runner.stop()
    assert out.read_text().splitlines() == ["start impact 0.97", "end impact 0.97"]
    assert runner.counters.failed == 0


def test_command_is_never_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = ACTION.validate_python({"type": "command", "argv": [f"touch {marker}"]})
    with pytest.raises(ActionError, match="No such file"):
        CommandAction(config, "x").run(event())  # type: ignore[arg-type]
    assert not marker.exists()


def test_command_failures_and_timeouts_are_action_errors() -> None:
    fails = ACTION.validate_python(
        {
            "type": "command",
            "argv": [sys.executable, "-c", "import sys; sys.stderr.write('jammed'); sys.exit(3)"],
        }
    )
    with pytest.raises(ActionError, match="exit status 3: jammed"):
        CommandAction(fails, "x").run(event())  # type: ignore[arg-type]
    hangs = ACTION.validate_python(
        {
            "type": "command",
            "argv": [sys.executable, "-c", "import time; time.sleep(30)"],
            "timeout_s": 0.2,
        }
    )
    with pytest.raises(ActionError, match=r"killed after 0\.2 s"):
        CommandAction(hangs, "x").run(event())  # type: ignore[arg-type]


def test_on_and_labels_choose_the_events(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    runner = actions(
        {
            "type": "command",
            "argv": [sys.executable, "-c", WRITE_ENV, str(out)],
            "on": ["end"],
            "labels": ["imbalance"],
        }
    )
    runner.start()
    try:
        runner.submit(
            [event("start", "imbalance"), event("end", "impact"), event("end", "imbalance")]
        )
        runner.submit([event("end", "imbalance", pipeline="other")])  # not this pipeline's
        wait_until(lambda: runner.counters.completed >= 1, "the command")
    finally:
        runner.stop()
    assert out.read_text().splitlines() == ["end imbalance 0.97"]


# -- webhook ------------------------------------------------------------------------------


class Hook:
    """An HTTP server on 127.0.0.1 that records POSTs and answers with scripted statuses."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alarm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
    server.thread.join()


def test_webhook_posts_the_event_json(hook: Hook) -> None:
    runner = actions({"type": "webhook", "url": hook.url, "headers": {"X-Token": "t0k"}})
    runner.start()
    try:
        sent = event()
        runner.submit([sent])
        wait_until(lambda: runner.counters.completed == 1, "the webhook")
    finally:
        runner.stop()
    (body,) = hook.bodies
    assert body["id"] == sent.id
    assert (body["state"], body["label"], body["score"], body["seq"]) == (
        "start",
        "impact",
        0.97,
        42,
    )
    assert body["ts"] == "2026-11-22T10:15:02+00:00"
    assert body["model"] == "vibration-anomaly"
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert hook.headers[0]["X-Token"] == "t0k"


def test_webhook_retries_a_5xx_once_and_never_a_4xx(hook: Hook) -> None:
    config = ACTION.validate_python({"type": "webhook", "url": hook.url})
    action = ACTIONS["webhook"](config, "x")
    hook.statuses = [503]
    action.run(event())  # the retry succeeds
    assert len(hook.bodies) == 2
    hook.statuses = [503, 502, 200]
    with pytest.raises(ActionError, match="HTTP 502"):
        action.run(event())
    assert len(hook.bodies) == 4
    hook.statuses = [404]
    with pytest.raises(ActionError, match="HTTP 404"):
        action.run(event())
    assert len(hook.bodies) == 5


def test_a_failing_action_is_counted_and_logged_once_until_it_recovers(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    runner = actions({"type": "webhook", "url": hook.url})
    hook.statuses = [400, 400, 400]
    runner.start()
    try:
        with caplog.at_level(logging.INFO, logger="edge_agent.delivery.action_workers"):
            runner.submit([event(), event(), event(), event()])
            wait_until(lambda: runner.counters.completed == 1, "the fourth webhook")
    finally:
        runner.stop()
    assert runner.counters.failed == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("action failed" in m for m in messages) == 1
    assert sum("works again" in m for m in messages) == 1


# -- mqtt ---------------------------------------------------------------------------------


def test_mqtt_publishes_the_event_to_a_local_broker(broker: Mosquitto) -> None:
    topic = f"plant/{uuid.uuid4().hex[:8]}/siren"
    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, msg: received.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    runner = actions({"type": "mqtt", "url": broker.url, "topic": topic, "on": ["start", "end"]})
    try:
        assert subscribed.wait(10)
        runner.start()
        (bound,) = runner._bound["spindle"]
        assert isinstance(bound.action, MqttAction)
        action = bound.action
        wait_until(lambda: action.connected, "the action's connection")
        runner.submit([event("start"), event("end")])
        wait_until(lambda: len(received) == 2, "two messages")
    finally:
        runner.stop()
        sub.disconnect()
        sub.loop_stop()
    assert [(m["state"], m["label"]) for m in received] == [("start", "impact"), ("end", "impact")]
    assert runner.counters.completed == 2


def test_mqtt_without_a_connection_fails_at_once() -> None:
    config = ACTION.validate_python({"type": "mqtt", "url": "mqtt://127.0.0.1:1", "topic": "t"})
    action = MqttAction(config, "x")  # type: ignore[arg-type]
    with pytest.raises(ActionError, match="not connected"):
        action.run(event())


# -- the queue: never blocking, latency recorded ---------------------------------------------


class Blocking:
    """An action that waits until the test releases it."""

    started = threading.Event()
    release = threading.Event()

    def __init__(self, config: Any, name: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, event: Event) -> None:
        Blocking.started.set()
        assert Blocking.release.wait(20)


class Recording:
    """An action that remembers the events it ran, in order."""

    ran: list[Event] = []

    def __init__(self, config: Any, name: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, event: Event) -> None:
        Recording.ran.append(event)


def test_a_slow_action_blocks_neither_submit_nor_other_actions_a_full_queue_drops() -> None:
    registry = CollectorRegistry()
    runner = actions(
        {"type": "command", "argv": ["unused"], "on": ["start", "end"]},
        {"type": "mqtt", "topic": "t", "on": ["start", "end"]},
        registry=registry,
        queue_size=2,
        factories={"command": Blocking, "mqtt": Recording},
    )
    runner.start()
    try:
        runner.submit([event()])
        assert Blocking.started.wait(10)  # the slow action's worker is busy with the first one
        sent = [event("end" if i % 2 else "start") for i in range(9)]
        for e in sent:  # returns at once: 2 queued for the slow action, 7 dropped
            runner.submit([e])
            wait_until(lambda e=e: e in Recording.ran, "the other action")  # type: ignore[misc]
        assert runner.counters.dropped == 7
        assert Recording.ran[1:] == sent  # in order, while the slow one is still stuck
        Blocking.release.set()
        wait_until(lambda: runner.counters.completed == 13, "the queued actions")
    finally:
        Blocking.release.set()
        runner.stop()
    labels = {"pipeline": "spindle", "type": "command"}
    assert (
        registry.get_sample_value("aiot_edge_actions_total", {**labels, "outcome": "dropped"}) == 7
    )


def test_every_completion_records_its_latency_from_the_capture_time(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    now = iter([0.004, 0.010, 0.020, 0.030])  # seconds after the capture, one per completion
    runner = actions(
        {"type": "command", "argv": [sys.executable, "-c", "pass"]},
        registry=registry,
        clock=lambda: CAPTURED_AT.timestamp() + next(now),
    )
    runner.start()
    try:
        runner.submit([event() for _ in range(4)])
        wait_until(lambda: runner.counters.completed == 4, "four commands")
    finally:
        runner.stop()
    assert runner.latencies() == pytest.approx([0.004, 0.010, 0.020, 0.030], abs=1e-6)
    assert runner.percentiles() == pytest.approx((0.020, 0.030), abs=1e-6)
    labels = {"pipeline": "spindle", "type": "command"}
    assert registry.get_sample_value("aiot_edge_action_latency_seconds_count", labels) == 4
    assert (
        registry.get_sample_value(
            "aiot_edge_action_latency_seconds_bucket", {**labels, "le": "0.005"}
        )
        == 1
    )


def test_stop_runs_what_is_queued_then_joins(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    runner = actions(
        {"type": "command", "argv": [sys.executable, "-c", WRITE_ENV, str(out)], "on": ["end"]},
    )
    runner.start()
    runner.submit([event("end") for _ in range(3)])
    runner.stop(grace_s=30)
    assert len(out.read_text().splitlines()) == 3
    assert not any(t.name.startswith("action-") for t in threading.enumerate())


# -- in the agent ---------------------------------------------------------------------------


def test_the_agent_acts_locally_on_every_start_and_end(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    out = tmp_path / "events.txt"
    base = agent_config(
        schedule=[{"at_s": 4, "duration_s": 3, "fault": "bearing_outer_race"}], duration_s=12
    )
    data = base.model_dump()
    data["pipelines"][0]["actions"] = [
        {
            "type": "command",
            "argv": [sys.executable, "-c", WRITE_ENV, str(out)],
            "on": ["start", "end"],
        }
    ]
    agent = Agent(AgentConfig.model_validate(data), flush_grace_s=0.1)
    agent.start()
    try:
        wait_until(agent.sources_done, "the finite source")
    finally:
        agent.stop()
    lines = out.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["start", "bearing_outer_race"],
        ["end", "bearing_outer_race"],
    ]
