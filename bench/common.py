"""Helpers shared by the benchmarks: event batches, a paho publisher that fills a queue and a
bare subscriber that drains one (the baseline of the ingest benchmarks), a PostgreSQL cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic_core import to_json

from shared.messages import Event, EventBatch, ModelRef, encode, new_event_id
from shared.topics import Channel, Topic
from tests.services import PostgresCluster


def event_batches(
    agent_id: str, batches: int, per_batch: int, *, acked: bool = False
) -> list[bytes]:
    """Pre-encoded EventBatch payloads of realistic size (ids unique across all batches);
    with ``acked`` each names a ``batch_id``, which ingest acknowledges on ``acks``."""
    model = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="ab" * 32)
    now = datetime.now(UTC)
    payloads = []
    for b in range(batches):
        events = [
            Event(
                id=new_event_id(),
                pipeline="spindle-vibration",
                kind="anomaly",
                state="start" if i % 2 == 0 else "end",
                label="bearing_outer_race",
                score=0.97,
                ts=now,
                seq=b * per_batch + i,
                model=model,
                attributes={"rms_g": 1.84, "peak_hz": 162.5},
            )
            for i in range(per_batch)
        ]
        batch_id = new_event_id() if acked else None
        batch = EventBatch(agent_id=agent_id, batch_id=batch_id, sent_at=now, events=events)
        payloads.append(encode(batch))
    return payloads


def publish_all(port: int, agent_id: str, payloads: list[bytes], inflight: int = 100) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{agent_id}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = str(Topic(agent_id, Channel.EVENTS))
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def event_rows(payloads: list[bytes], received: datetime) -> list[tuple[Any, ...]]:
    """The ``events`` rows of ``payloads`` (``rollups.EVENT_COLUMNS`` order), built outside
    any timing: what a bare bulk insert of the same events starts from."""
    rows = []
    for payload in payloads:
        batch = EventBatch.model_validate_json(payload)
        for e in batch.events:
            rows.append(
                (e.id, batch.agent_id, e.pipeline, e.kind, e.state, e.label, e.score, e.ts, e.seq,
                 e.model.name, e.model.version, e.model.sha256, to_json(e.attributes).decode(),
                 received)
            )  # fmt: skip
    return rows


def bare_subscriber_rate(port: int, agent_id: str, payloads: list[bytes], per_batch: int) -> float:
    """Events/s a bare paho subscriber receives from a queue the broker already holds.

    The subscriber's persistent session is created first, the messages are queued while it
    is away, then it reconnects and drains: that measures the consumer, not the publisher.
    """
    client_id = f"bench-bare-{agent_id}"
    done = threading.Event()
    received = 0

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received == len(payloads):
            done.set()

    def connect() -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
        return client

    topic = str(Topic(agent_id, Channel.EVENTS))
    first = connect()
    first.subscribe(topic, qos=1)
    first.loop_start()
    time.sleep(0.3)
    first.disconnect()
    first.loop_stop()
    publish_all(port, agent_id, payloads)
    start = time.perf_counter()
    second = connect()
    second.loop_start()
    if not done.wait(120):
        raise TimeoutError(f"bare subscriber got {received} of {len(payloads)} messages")
    elapsed = time.perf_counter() - start
    second.disconnect()
    second.loop_stop()
    return len(payloads) * per_batch / elapsed


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the block, stopped (and its data removed) after."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
