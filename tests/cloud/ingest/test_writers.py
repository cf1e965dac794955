"""The batched ingest path (COPY + INSERT ... SELECT on PostgreSQL, RETURNING on SQLite).

Duplicates are counted exactly, the rollups only ever see events stored for the first time,
a message the database refuses is isolated as a dead letter, and two workers on one shared
subscription that store the same events at the same time still store each exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.worker import IngestWorker
from cloud_api.rollup_tables import EVENT_ROLLUP_TOTALS, EVENT_ROLLUPS
from cloud_api.tables import EVENTS
from shared.messages import EventBatch, encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    REFUSED_LABEL,
    Publisher,
    ingest_of,
    make_batch,
    refuse_label_in_database,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def stored_and_rolled(engine: Engine, agent_id: str) -> tuple[int, int]:
    """Events stored for ``agent_id``, and the events its rollup rows count."""
    with engine.connect() as conn:
        events = conn.scalar(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.agent_id == agent_id)
        )
        rolled = conn.scalar(
            select(func.sum(EVENT_ROLLUPS.c.events)).where(EVENT_ROLLUPS.c.agent_id == agent_id)
        )
    return int(events or 0), int(rolled or 0)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def test_duplicates_within_and_across_batches_count_exactly(
    api: TestClient, publisher: Publisher, engine: Engine
) -> None:
    agent = unique_agent_id()
    first = make_batch(agent, 5)
    # The same id twice in one batch, and two ids stored by the first batch.
    repeat = [*make_batch(agent, 3).events, first.events[0], first.events[1]]
    second = EventBatch(agent_id=agent, sent_at=utcnow(), events=[*repeat, repeat[0]])
    worker = ingest_of(api)

    publisher.publish(topic(agent, Channel.EVENTS), encode(first))
    publisher.publish(topic(agent, Channel.EVENTS), encode(second))
    # On counts of events, not of messages: the session broker also hands this worker the
    # retained statuses other tests left behind.
    wait_until(lambda: worker.events_stored + worker.duplicates >= 11, what="both batches")

    assert (worker.events_stored, worker.duplicates) == (8, 3)
    assert stored_and_rolled(engine, agent) == (8, 8)


def test_a_refused_message_is_isolated_and_the_rest_rolled_up(
    make_api: AppFactory, publisher: Publisher, engine: Engine
) -> None:
    agent = unique_agent_id()
    good = [make_batch(agent, 4) for _ in range(3)]
    # Valid for the schema, refused by a trigger (the schema lets nothing through that a
    # database refuses by itself).
    odd = make_batch(agent, 2, label=REFUSED_LABEL)
    with make_api(ingest_flush_s=0.3) as api:
        refuse_label_in_database(engine)
        worker = ingest_of(api)
        for batch in [good[0], odd, good[1], good[2]]:
            publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
        wait_until(lambda: worker.messages >= 4, what="four messages committed")

    assert worker.dead_letters == 1
    assert stored_and_rolled(engine, agent) == (12, 12)


def test_two_workers_storing_the_same_events_at_once(broker: Mosquitto, engine: Engine) -> None:
    migrate(engine)
    agent = unique_agent_id()
    group = f"g{uuid.uuid4().hex[:8]}"
    start = utcnow() - timedelta(minutes=30)
    # 40 batches in two hours of one series: every transaction upserts the same rollup rows.
    batches = [
        make_batch(agent, 50, start=start + timedelta(minutes=3 * n, seconds=1)) for n in range(40)
    ]
    workers = [
        IngestWorker(
            engine=engine,
            mqtt_url=broker.url,
            client_id=f"ingest-{group}-{n}",
            share_group=group,
            batch_max=5,
            flush_s=0.01,
            session_expiry_s=60,
        )
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    publisher = Publisher("127.0.0.1", broker.port).connect()
    try:
        for worker in workers:
            worker.wait_connected()
        for batch in batches:  # each batch twice: the copies can land on either worker
            publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
            publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
        wait_until(
            lambda: sum(w.events_stored + w.duplicates for w in workers) >= 4000,
            timeout=60,
            what="80 batches of 50 events",
        )
    finally:
        publisher.close()
        for worker in workers:
            worker.stop()

    assert sum(w.events_stored for w in workers) == 2000
    assert sum(w.duplicates for w in workers) == 2000
    assert sum(w.dead_letters for w in workers) == 0
    assert stored_and_rolled(engine, agent) == (2000, 2000)
    with engine.connect() as conn:
        assert conn.scalar(select(func.sum(EVENT_ROLLUP_TOTALS.c.events))) == 2000
