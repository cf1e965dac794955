"""Wire payloads and a real MQTT publisher for cloud tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import paho.mqtt.client as mqtt
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, text

from cloud_api.auth import Scope, create_api_key
from cloud_api.ingest.worker import IngestWorker
from shared.messages import (
    AgentStatus,
    Event,
    EventBatch,
    ModelRef,
    PipelineStatus,
    encode,
    new_event_id,
    utcnow,
)
from shared.topics import Channel, Topic

MODEL = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f2c" + "0" * 60)
T = TypeVar("T")


def unique_agent_id(prefix: str = "agent") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_batch(
    agent_id: str,
    count: int,
    *,
    pipeline: str = "spindle-vibration",
    label: str = "bearing_outer_race",
    kind: str = "anomaly",
    start: datetime | None = None,
) -> EventBatch:
    """``count`` events one millisecond apart, oldest first."""
    base = start or utcnow()
    events = [
        Event(
            id=new_event_id(),
            pipeline=pipeline,
            kind=kind,
            state="start",
            label=label,
            score=0.97,
            ts=base + timedelta(milliseconds=i),
            seq=i,
            model=MODEL,
            attributes={"rms_g": 1.84, "peak_hz": 162.5},
        )
        for i in range(count)
    ]
    return EventBatch(agent_id=agent_id, sent_at=utcnow(), events=events)


def make_status(agent_id: str, **changes: object) -> AgentStatus:
    values: dict[str, object] = {
        "agent_id": agent_id,
        "state": "online",
        "ts": utcnow(),
        "agent_version": "0.1.0",
        "uptime_s": 12.5,
        "heartbeat_s": 30.0,
        "pipelines": [
            PipelineStatus(
                name="spindle-vibration", model=MODEL, samples_in=100, inferences=90, events_out=3
            )
        ],
        "outbox_depth": 7,
        "outbox_oldest_age_s": 1.5,
    }
    values.update(changes)
    return AgentStatus.model_validate(values)


def topic(agent_id: str, channel: Channel) -> str:
    return str(Topic(agent_id, channel))


class Publisher:
    """A real paho client; ``publish`` returns once the broker has acknowledged (QoS 1)."""

    def __init__(self, host: str, port: int, **client_options: object) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            **client_options,  # type: ignore[arg-type]
        )
        self.host, self.port = host, port

    def connect(self) -> Publisher:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        return self

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic_name, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"broker did not acknowledge {topic_name}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(probe: Callable[[], T | None], *, timeout: float = 15.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(0.02)


def batch_payload(batch: EventBatch) -> bytes:
    return encode(batch)


def ingest_of(client: TestClient) -> IngestWorker:
    """The app's running ingest worker."""
    worker = client.app.state.ingest  # type: ignore[attr-defined]
    assert isinstance(worker, IngestWorker)
    return worker


def new_api_key(client: TestClient, scope: Scope, name: str = "") -> str:
    """A new API key in the running app's database; returns its token."""
    with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        _, token = create_api_key(session, name=name or f"tests-{scope}", scope=scope)
    return token


def client_as(
    client: TestClient, token: str | None = None, *, basic: tuple[str, str] | None = None
) -> TestClient:
    """A client of the same running app with ``token`` (or Basic ``basic``, or nothing)."""
    other = TestClient(client.app)
    if token is not None:
        other.headers["Authorization"] = f"Bearer {token}"
    if basic is not None:
        other.auth = basic
    return other


REFUSED_LABEL = "refused-by-the-database"


def refuse_label_in_database(engine: Engine, label: str = REFUSED_LABEL) -> None:
    """Make the database refuse events labelled ``label`` (a trigger).

    The wire contract lets nothing through that SQLite or PostgreSQL would refuse, so a test of
    what ingest does when the database refuses a message has to make the database do it.
    """
    literal = "'" + label.replace("'", "''") + "'"
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_label() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.label = {literal} THEN RAISE EXCEPTION 'label refused by a test'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_label BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_label()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_label BEFORE INSERT ON events "
                    f"WHEN NEW.label = {literal} "
                    "BEGIN SELECT RAISE(ABORT, 'label refused by a test'); END"
                )
            )
