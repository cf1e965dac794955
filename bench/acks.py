"""What end-to-end acknowledgement costs (DESIGN §3), each against the same run without it.

* **Ingest:** events/s committed from a broker backlog when every batch names a ``batch_id``
  (ingest publishes an ``Acks`` message per agent after each commit) against the same backlog
  without batch ids (nothing to acknowledge). Same broker, same database kind, alternated.
* **Agent:** events/s from a full outbox until the cloud (an ingest process) has stored them
  all, with the real ``Uplink`` (rows leave on the cloud's acks) against the same outbox
  drained the way the agent did before end-to-end acks: lease a batch, publish it with the
  same in-flight window, delete it on its PUBACK. Both do the same outbox work; the ratio is
  what waiting for the cloud costs. A bare publisher of pre-encoded batches (no outbox at
  all) is recorded beside it: on two cores the agent's own work competes with ingest and
  the broker for the CPU, which a gateway and a cloud do not share.
"""

from __future__ import annotations

import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, func, select

import models
from bench.common import event_batches, publish_all
from bench.ingest import ingest_rate
from bench.result import Goal, Result
from cli.broker import MosquittoProcess
from cloud_api.db import create_db_engine, migrate
from cloud_api.tables import EventRow
from edge_agent.config import AgentConfig
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.uplink import Uplink
from shared.messages import AgentStatus, EventBatch, encode_event_batch, new_event_id, utcnow
from shared.topics import Channel, Topic

PER_BATCH = 100
ROUNDS = 3
AGENT_EVENTS = 20_000
AIOT = Path(sys.executable).parent / "aiot"
MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"


def bench_acks() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-acks-"))
    broker = MosquittoProcess(workdir)
    broker.start()
    try:
        return [_ingest(broker, workdir), _agent(broker, workdir)]
    finally:
        broker.stop()


def _ingest(broker: MosquittoProcess, workdir: Path) -> Result:
    with_acks: list[float] = []
    without: list[float] = []
    for i in range(ROUNDS):
        for acked, rates in ((False, without), (True, with_acks)):
            database = f"sqlite:///{workdir / f'ingest-{acked}-{i}.sqlite'}"
            rates.append(ingest_rate(broker.port, database, PER_BATCH, acked=acked))
    return Result(
        name=f"ingest with end-to-end acks, SQLite, {PER_BATCH} events/message",
        value=statistics.median(with_acks),
        unit="events/s",
        baseline=statistics.median(without),
        baseline_name="same backlog, no acks",
        goal=Goal.ratio(">=", 0.95),
        details={"rounds": ROUNDS, "events_per_message": PER_BATCH},
    )


def _agent(broker: MosquittoProcess, workdir: Path) -> Result:
    uplink_rates: list[float] = []
    puback_rates: list[float] = []
    bare_rates: list[float] = []
    for i in range(ROUNDS):
        database = f"sqlite:///{workdir / f'agent-{i}.sqlite'}"
        migrate_only = create_db_engine(database)
        migrate(migrate_only)
        # Ingest in its own process, as on a real cloud: the agent's work and the cloud's do
        # not share a GIL, so the ratio is what the agent's side costs.
        ingest = subprocess.Popen(
            [str(AIOT), "cloud", "ingest", "--db", database, "--mqtt", broker.url,
             "--client-id", f"bench-acks-ingest-{i}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait(partial(_subscribed, migrate_only, broker), "ingest to subscribe")
            bare_rates.append(_bare_publisher_rate(broker, migrate_only))
            outbox = workdir / f"puback-{i}.db"
            puback_rates.append(_puback_only_rate(broker, migrate_only, outbox))
            uplink_rates.append(_uplink_rate(broker, migrate_only, workdir / f"outbox-{i}.db"))
        finally:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
            migrate_only.dispose()
    return Result(
        name="agent delivery with end-to-end acks (outbox -> ingest, rows leave on ack)",
        value=statistics.median(uplink_rates),
        unit="events/s",
        baseline=statistics.median(puback_rates),
        baseline_name="the same outbox, rows deleted on PUBACK",
        goal=Goal.ratio(">=", 0.95),
        details={
            "rounds": ROUNDS,
            "events": AGENT_EVENTS,
            "events_per_message": PER_BATCH,
            "bare_publisher_events_per_s": round(statistics.median(bare_rates)),
        },
    )


def _stored(engine: Engine, agent_id: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(EventRow).where(EventRow.agent_id == agent_id)
        return int(conn.scalar(query) or 0)


def _subscribed(engine: Engine, broker: MosquittoProcess) -> bool:
    """Ingest stores a probe event: it is connected and subscribed."""
    agent_id = f"probe-{uuid.uuid4().hex[:8]}"
    publish_all(broker.port, agent_id, event_batches(agent_id, 1, 1))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if _stored(engine, agent_id):
            return True
        time.sleep(0.05)
    return False


def _bare_publisher_rate(broker: MosquittoProcess, engine: Engine) -> float:
    agent_id = f"bare-{uuid.uuid4().hex[:8]}"
    payloads = event_batches(agent_id, AGENT_EVENTS // PER_BATCH, PER_BATCH)
    start = time.perf_counter()
    publish_all(broker.port, agent_id, payloads, inflight=10)
    _wait(lambda: _stored(engine, agent_id) >= AGENT_EVENTS, "bare events stored")
    return AGENT_EVENTS / (time.perf_counter() - start)


def _filled_outbox(agent_id: str, path: Path) -> Outbox:
    outbox = Outbox(path, max_bytes=1 << 30, max_age_s=1e9)
    for payload in event_batches(agent_id, AGENT_EVENTS // PER_BATCH, PER_BATCH):
        outbox.put(EventBatch.model_validate_json(payload).events)
    return outbox


def _puback_only_rate(broker: MosquittoProcess, engine: Engine, path: Path) -> float:
    """The agent's delivery before end-to-end acks: rows deleted on the broker's PUBACK."""
    agent_id = f"puback-{uuid.uuid4().hex[:8]}"
    outbox = _filled_outbox(agent_id, path)
    pubacks: queue.SimpleQueue[int] = queue.SimpleQueue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=agent_id, protocol=mqtt.MQTTv5)
    client.on_publish = lambda _c, _u, mid, _r, _p: pubacks.put(mid)
    topic = str(Topic(agent_id, Channel.EVENTS))
    inflight: dict[int, list[str]] = {}
    start = time.perf_counter()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        while True:
            while len(inflight) < 10 and (items := outbox.next_batch(PER_BATCH)):
                payloads = [item.payload for item in items]
                payload = encode_event_batch(agent_id, new_event_id(), utcnow(), payloads)
                inflight[client.publish(topic, payload, qos=1).mid] = [i.item_id for i in items]
            if not inflight:
                break
            outbox.ack(inflight.pop(pubacks.get(timeout=30)))
        _wait(lambda: _stored(engine, agent_id) >= AGENT_EVENTS, "PUBACK-only events stored")
        return AGENT_EVENTS / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()
        outbox.close()


def _uplink_rate(broker: MosquittoProcess, engine: Engine, path: Path) -> float:
    agent_id = f"uplink-{uuid.uuid4().hex[:8]}"
    config = AgentConfig.model_validate(
        {
            "agent_id": agent_id,
            "mqtt": {"url": broker.url, "heartbeat_s": 60},
            "outbox": {"path": str(path), "batch_max_events": PER_BATCH},
            # Never run: the uplink only drains the outbox this bench fills.
            "pipelines": [
                {
                    "name": "bench",
                    "source": {"type": "simulated_vibration", "seed": 1},
                    "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)},
                }
            ],
        }
    )
    outbox = _filled_outbox(agent_id, path)

    def status() -> AgentStatus:
        return AgentStatus(agent_id=agent_id, state="online", ts=utcnow())

    uplink = Uplink(config, outbox, status)
    start = time.perf_counter()
    uplink.start()
    try:
        _wait(lambda: outbox.depth() == 0, "the outbox to empty on the cloud's acks")
        elapsed = time.perf_counter() - start
        if _stored(engine, agent_id) != AGENT_EVENTS:
            raise AssertionError("the outbox emptied before the cloud stored every event")
    finally:
        uplink.stop(grace_s=0)
        outbox.close()
    return AGENT_EVENTS / elapsed


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)
