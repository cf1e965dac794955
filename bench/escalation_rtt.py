"""Escalation round trip: from an agent publishing an unsure input to its reconciled event.

Everything is real and in its own place: Mosquitto, the cloud model runner as its own process
(``aiot cloud escalations``, SQLite, the shipped cloud model), and an agent in this process
whose simulated machine runs at twice real time with every window in its escalation band.

The clock starts when the escalation reaches the broker (a subscriber in this process sees
it: that is the publish, give or take the loopback) and stops when the agent has turned the
cloud's answer into its reconciled event (the agent's ``Escalator.answered`` returned; the
benchmark wraps it to read the clock, nothing else changes). No goal is stated in the issue:
the figures are reported as measured.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import models
from bench.escalation import PIPELINE, _messages, _npy, _setup
from bench.result import Result
from cli.broker import MosquittoProcess
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.delivery.escalation import Escalator
from edge_agent.sources.machine_physics import MachineSpec, SimulatedMachine
from shared.escalations import Escalation, EscalationResult
from shared.messages import Event
from shared.topics import Channel, subscription

AIOT = Path(sys.executable).parent / "aiot"
MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"
SPEED = 2.0
SOURCE_S = 40.0
"""Machine seconds: about 250 windows of 0.16 s at twice real time, every one escalated."""


class _Clocks:
    """When each escalation reached the broker, and when the agent reconciled its answer."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.reconciled: dict[str, float] = {}
        self.lock = threading.Lock()

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        escalation_id = Escalation.model_validate_json(msg.payload).id
        with self.lock:
            self.published.setdefault(escalation_id, now)

    def round_trips_ms(self) -> list[float]:
        with self.lock:
            both = self.published.keys() & self.reconciled.keys()
            return sorted(1000 * (self.reconciled[i] - self.published[i]) for i in both)


def bench_escalation_round_trip() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-escalation-rtt-"))
    broker = MosquittoProcess(workdir)
    broker.start()
    engine, _ = _setup(workdir)
    engine.dispose()
    runner = subprocess.Popen(
        [str(AIOT), "cloud", "escalations", "--db", f"sqlite:///{workdir / 'cloud.db'}",
         "--mqtt", broker.url, "--client-id", "bench-rtt-runner", "--metrics-port", "0"],
        env={**os.environ, "AIOT_DATA_DIR": str(workdir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    clocks = _Clocks()
    watcher = _watch(broker, clocks)
    _wait_for_runner(broker, workdir)
    answered = Escalator.answered

    def timed(self: Escalator, result: EscalationResult, event: Event | None) -> None:
        answered(self, result, event)
        with clocks.lock:
            clocks.reconciled[result.escalation_id] = time.monotonic()

    Escalator.answered = timed  # type: ignore[method-assign]
    try:
        agent = Agent(_config(broker, workdir))
        agent.start()
        try:
            _wait(agent.sources_done, 4 * SOURCE_S / SPEED, "the source to end")
            sent = agent.status().pipelines[0].escalated
            _wait(lambda: len(clocks.reconciled) >= sent, 60.0, "every answer")
        finally:
            agent.stop()
    finally:
        Escalator.answered = answered  # type: ignore[method-assign]
        watcher.disconnect()
        watcher.loop_stop()
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)
        broker.stop()
    return _results(clocks.round_trips_ms(), sent)


def _results(trips: list[float], sent: int) -> list[Result]:
    if not trips:
        raise RuntimeError("no escalation came back reconciled")
    p50 = statistics.median(trips)
    p99 = trips[min(len(trips) - 1, len(trips) * 99 // 100)]
    details: dict[str, float | int | str] = {
        "escalations": sent, "timed": len(trips), "speed": SPEED,
        "runner": "aiot cloud escalations, SQLite, shipped cloud model",
    }  # fmt: skip
    return [
        Result(name="escalation round trip, publish -> reconciled event, p50",
               value=round(p50, 2), unit="ms", details=details),
        Result(name="escalation round trip, publish -> reconciled event, p99",
               value=round(p99, 2), unit="ms", details=details),
    ]  # fmt: skip


def _watch(broker: MosquittoProcess, clocks: _Clocks) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_message = clocks.on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(subscription(Channel.ESCALATIONS), qos=1)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("the watcher could not subscribe")
    return client


def _wait_for_runner(broker: MosquittoProcess, workdir: Path) -> None:
    """Until the runner answers a probe: escalations sent before it subscribed would wait for
    the agent's resend, and time the start-up rather than the round trip."""
    (probe,) = _messages([_npy(SimulatedMachine(MachineSpec(), seed=0).window(None))])
    answered = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda *_: answered.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"{probe.topic.rsplit('/', 1)[0]}/{Channel.ESCALATION_RESULT}", qos=1)
    client.loop_start()
    try:
        deadline = time.monotonic() + 60.0
        while not answered.wait(0.5):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the runner did not answer a probe ({workdir})")
            client.publish(probe.topic, probe.payload, qos=1)
    finally:
        client.disconnect()
        client.loop_stop()


def _config(broker: MosquittoProcess, workdir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent_id": "bench-rtt-gw",
            "mqtt": {"url": broker.url, "heartbeat_s": 5.0},
            "outbox": {"path": str(workdir / "outbox.db")},
            "pipelines": [
                {
                    "name": PIPELINE,
                    "source": {
                        "type": "simulated_vibration",
                        "seed": 5,
                        "speed": SPEED,
                        "duration_s": SOURCE_S,
                    },
                    "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)},
                    "escalate": {"band": [0.0, 1.0], "budget_per_min": 60_000},
                    "summary_interval_s": 0,
                }
            ],
        }
    )


def _wait(done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)
