"""One bad message never takes its neighbours with it, and every batch is answered on ``acks``.

Real Mosquitto, real ingest, SQLite and PostgreSQL. A database trigger refuses events labelled
``poison`` (a message the schema accepts and the database refuses, as a value beyond 64 bits
was before the contract bounded it): ingest must store every other message of the same
transaction, dead-letter the culprit alone with the database's reason, and tell each agent
which batches are stored and which are rejected.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, func, select, text

from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.worker import IngestWorker
from cloud_api.tables import DeadLetterRow, EventRow
from shared.messages import Acks, encode, new_event_id
from shared.topics import Channel, Topic
from tests.cloud.helpers import make_batch, make_status, unique_agent_id, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

_SQLITE_TRIGGER = """
CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.label = 'poison'
BEGIN SELECT RAISE(ABORT, 'poison refused by the database'); END
"""
_POSTGRES_TRIGGER = [
    """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.label = 'poison' THEN RAISE EXCEPTION 'poison refused by the database'; END IF;
      RETURN NEW;
    END $$""",
    """CREATE TRIGGER refuse_poison BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_poison()""",
]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        statements = [_SQLITE_TRIGGER] if engine.dialect.name == "sqlite" else _POSTGRES_TRIGGER
        for statement in statements:
            conn.execute(text(statement))
    yield engine
    engine.dispose()


def start_worker(engine: Engine, broker: Mosquitto, client_id: str) -> IngestWorker:
    # A long flush window: everything published below lands in one ingest batch.
    worker = IngestWorker(
        engine=engine, mqtt_url=broker.url, client_id=client_id, batch_max=500, flush_s=1.0
    )
    worker.start()
    worker.wait_connected()
    return worker


class AgentClient:
    """A paho client that publishes as one agent and records the acks it gets back."""

    def __init__(self, broker: Mosquitto, agent_id: str) -> None:
        self.acks: list[Acks] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"a-{agent_id}")
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe(str(Topic(agent_id, Channel.ACKS)), qos=1)
        self._client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.acks.append(Acks.model_validate_json(msg.payload))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def outcomes(self) -> dict[str, str]:
        with self._lock:
            return {ack.batch_id: ack.outcome for acks in self.acks for ack in acks.acks}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_valid_and_invalid_messages_in_one_batch(engine: Engine, broker: Mosquitto) -> None:
    agent = unique_agent_id()
    events = str(Topic(agent, Channel.EVENTS))
    client = AgentClient(broker, agent)
    worker = start_worker(engine, broker, f"ingest-{uuid.uuid4().hex[:8]}")
    try:
        good: list[str] = []
        bad: list[str] = []
        valid_events = 0
        for i in range(12):
            batch = make_batch(agent, 5).model_copy(update={"batch_id": new_event_id()})
            if i % 4 == 1:  # the schema accepts it; the database refuses it
                poisoned = [e.model_copy(update={"label": "poison"}) for e in batch.events]
                batch = batch.model_copy(update={"events": poisoned})
                bad.append(str(batch.batch_id))
                client.publish(events, encode(batch))
            elif i % 4 == 3:  # not even the schema accepts it, but it names its batch
                batch_id = new_event_id()
                bad.append(batch_id)
                client.publish(events, f'{{"batch_id": "{batch_id}", "events": 7}}'.encode())
            else:
                good.append(str(batch.batch_id))
                valid_events += len(batch.events)
                client.publish(events, encode(batch))
        wait_until(lambda: len(client.outcomes()) == len(good) + len(bad) or None, what="acks")
        with engine.connect() as conn:
            stored = conn.scalar(
                select(func.count()).select_from(EventRow).where(EventRow.agent_id == agent)
            )
            letters = conn.execute(
                select(DeadLetterRow.reason).where(DeadLetterRow.topic == events)
            ).all()
        assert stored == valid_events
        assert len(letters) == len(bad)
        assert sum("poison refused by the database" in reason for (reason,) in letters) == 3
        outcomes = client.outcomes()
        assert {outcomes[b] for b in good} == {"stored"}
        assert {outcomes[b] for b in bad} == {"rejected"}
    finally:
        worker.stop()
        client.close()


def stored(engine: Engine, event_id: str) -> bool | None:
    with engine.connect() as conn:
        return conn.scalar(select(EventRow.id).where(EventRow.id == event_id)) is not None or None


def test_a_retained_dead_letter_is_kept_once(engine: Engine, broker: Mosquitto) -> None:
    agent = unique_agent_id()
    status_topic = str(Topic(agent, Channel.STATUS))
    client = AgentClient(broker, agent)
    garbage = encode(make_status(agent)).replace(b'"online"', b'"sleepy"')
    client.publish(status_topic, garbage, retain=True)
    try:
        for _ in range(3):  # every subscribe replays the retained message
            worker = start_worker(engine, broker, f"ingest-{uuid.uuid4().hex[:8]}")
            try:
                # The broker replays retained messages before anything published after the
                # SUBACK, and ingest stores in order: once this is stored, the replay was seen.
                sentinel = make_batch(agent, 1)
                client.publish(str(Topic(agent, Channel.EVENTS)), encode(sentinel))
                wait_until(partial(stored, engine, sentinel.events[0].id), what="the sentinel")
            finally:
                worker.stop()
        with engine.connect() as conn:
            kept = conn.scalar(
                select(func.count())
                .select_from(DeadLetterRow)
                .where(DeadLetterRow.topic == status_topic)
            )
        assert kept == 1
    finally:
        client.publish(status_topic, b"", retain=True)
        client.close()
