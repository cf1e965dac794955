"""Hourly rollups answer hour and day aggregates exactly as the raw events do.

Events go through the real ingest (MQTT -> SQL) on SQLite and PostgreSQL; the same question is
then answered from rollups and from raw events. Scores are multiples of 1/64, so every sum is
exact in floating point whatever order the database adds in, and the answers must be equal,
not merely close.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from cloud_api.analytics import aggregates, rollups
from cloud_api.db import alembic_config, create_db_engine, migrate
from cloud_api.schemas import Bucket, GroupKey, Metric
from cloud_api.tables import EVENTS
from shared.messages import Event, EventBatch, ModelRef, encode, new_event_id, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import MODEL, Publisher, ingest_of, topic, unique_agent_id, wait_until

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat("2025-06-01T00:00:00+00:00")
MODEL_V2 = ModelRef(name=MODEL.name, version="2.0.0", sha256="cd" * 32)
LABELS = ("imbalance", "bearing", "person")
PIPELINES = (("spindle-vibration", "anomaly"), ("door-camera", "object"))


def random_events(rng: random.Random, count: int) -> list[Event]:
    """Events over three days, scores exact in binary, a few series and two model versions."""
    events = []
    for i in range(count):
        pipeline, kind = rng.choice(PIPELINES)
        events.append(
            Event(
                id=new_event_id(),
                pipeline=pipeline,
                kind=kind,
                state="instant",
                label=rng.choice(LABELS),
                score=rng.randrange(65) / 64,
                ts=T0 + timedelta(seconds=rng.randrange(3 * 24 * 3600), microseconds=i),
                seq=i,
                model=rng.choice((MODEL, MODEL_V2)),
                attributes={},
            )
        )
    return events


def publish_and_wait(
    api: TestClient, publisher: Publisher, agent: str, events: list[Event], stored: int
) -> None:
    for start in range(0, len(events), 100):
        batch = EventBatch(agent_id=agent, sent_at=utcnow(), events=events[start : start + 100])
        publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
    worker = ingest_of(api)
    wait_until(lambda: worker.events_stored >= stored, what=f"{stored} events stored")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


QUESTIONS: list[dict[str, Any]] = [
    {"metric": "count", "bucket": "hour"},
    {"metric": "avg", "bucket": "hour", "group_by": ["label"]},
    {"metric": "min", "bucket": "hour", "group_by": ["agent_id", "kind"]},
    {"metric": "max", "bucket": "day", "group_by": ["model_version"]},
    {"metric": "avg", "bucket": "day", "group_by": ["pipeline", "label"]},
    {"metric": "count", "bucket": "day", "label": "person"},
    {"metric": "avg", "bucket": "hour", "kind": "anomaly", "group_by": ["label"]},
    # One dimension, grouped or filtered: read from event_rollups_hourly_by_{dimension}.
    {"metric": "avg", "bucket": "hour", "group_by": ["agent_id"]},
    {"metric": "max", "bucket": "hour", "group_by": ["pipeline"]},
    {"metric": "min", "bucket": "day", "group_by": ["kind"], "kind": "object"},
    {"metric": "count", "bucket": "hour", "group_by": ["model_version"]},
    {"metric": "avg", "bucket": "day", "pipeline": "door-camera"},
    {"metric": "count", "bucket": "hour", "pipeline": "door-camera", "group_by": ["label"]},
    # Hour buckets filtered on the grouped dimension: one rollup row per bucket, not merged.
    {"metric": "max", "bucket": "hour", "group_by": ["kind"], "kind": "object"},
]
FILTERS = ("agent_id", "pipeline", "label", "kind")


def level_of(question: dict[str, Any]) -> rollups.Level:
    return rollups.level_for([*question.get("group_by", []), *set(FILTERS) & set(question)])


def test_the_questions_read_every_level_of_rollups() -> None:
    assert {level_of(question).table.name for question in QUESTIONS} == {
        level.table.name for level in rollups.LEVELS
    }


# Aligned to the hour, and not: the partial hours at either end come from raw events.
RANGES = [
    (T0, T0 + timedelta(days=3)),
    (T0 + timedelta(hours=5, minutes=17, seconds=3), T0 + timedelta(days=2, minutes=41)),
    (T0 + timedelta(hours=30, minutes=10), T0 + timedelta(hours=30, minutes=50)),
    (T0 - timedelta(hours=1), T0 + timedelta(hours=49, seconds=1)),
]


def answer(
    session: Session,
    question: dict[str, Any],
    since: datetime,
    until: datetime,
    *,
    use_rollups: bool,
) -> list[Any]:
    metric: Metric = question["metric"]
    bucket: Bucket = question["bucket"]
    group_by: list[GroupKey] = question.get("group_by", [])
    report = aggregates.aggregate_events(
        session,
        metric=metric,
        bucket=bucket,
        since=since,
        until=until,
        group_by=group_by,
        agent_id=question.get("agent_id"),
        pipeline=question.get("pipeline"),
        label=question.get("label"),
        kind=question.get("kind"),
        use_rollups=use_rollups,
    )
    return [series.model_dump() for series in report.series]


def test_rollups_answer_exactly_as_raw_events(
    api: TestClient, publisher: Publisher, engine: Engine
) -> None:
    rng = random.Random(20250601)
    press, door = unique_agent_id("press"), unique_agent_id("door")
    publish_and_wait(api, publisher, press, random_events(rng, 700), 700)
    publish_and_wait(api, publisher, door, random_events(rng, 300), 1000)

    with Session(engine) as session:
        for level in rollups.LEVELS:
            assert session.scalar(select(func.sum(level.table.c.events))) == 1000, level
        for question in QUESTIONS:
            for since, until in RANGES:
                expected = answer(session, question, since, until, use_rollups=False)
                assert expected, (question, since, until)
                assert answer(session, question, since, until, use_rollups=True) == expected, (
                    question,
                    since,
                    until,
                )


def test_duplicates_are_not_counted_twice(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    events = random_events(random.Random(3), 50)
    first, again = events[:30], events[20:]  # ten events arrive twice
    publish_and_wait(api, publisher, agent, first, 30)
    publish_and_wait(api, publisher, agent, again, 50)
    worker = ingest_of(api)
    assert (worker.events_stored, worker.duplicates) == (50, 10)

    report = api.get(
        "/api/v1/aggregates",
        params={
            "bucket": "day",
            "since": T0.isoformat(),
            "until": (T0 + timedelta(days=3)).isoformat(),
        },
    ).json()
    assert sum(point["count"] for s in report["series"] for point in s["points"]) == 50


def test_the_migration_backfills_rollups_from_stored_events(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "0005")  # the schema before rollups existed
    rng = random.Random(5)
    rows = [
        {
            "id": e.id,
            "agent_id": "agent-old",
            "pipeline": e.pipeline,
            "kind": e.kind,
            "state": e.state,
            "label": e.label,
            "score": e.score,
            "ts": e.ts,
            "seq": e.seq,
            "model_name": e.model.name,
            "model_version": e.model.version,
            "model_sha256": e.model.sha256,
            "attributes": {},
            "received_at": e.ts,
        }
        for e in random_events(rng, 200)
    ]
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), rows)

    migrate(engine)

    with Session(engine) as session:
        for question in QUESTIONS:
            expected = answer(session, question, *RANGES[0], use_rollups=False)
            assert answer(session, question, *RANGES[0], use_rollups=True) == expected, question


def test_rollup_buckets_are_hours_in_utc(
    make_api: AppFactory, database_url: str, publisher: Publisher
) -> None:
    if database_url.startswith("postgresql"):
        database_url += "?options=-c%20TimeZone%3DAsia/Kolkata"  # a half-hour zone
    late = Event(
        id=new_event_id(),
        pipeline="spindle-vibration",
        kind="anomaly",
        state="instant",
        label="x",
        score=0.5,
        ts=T0 + timedelta(hours=20, minutes=40),
        seq=0,
        model=MODEL,
        attributes={},
    )
    with make_api(database_url=database_url) as api:
        publish_and_wait(api, publisher, unique_agent_id(), [late], 1)
        hours = api.get(
            "/api/v1/aggregates",
            params={"since": T0.isoformat(), "until": (T0 + timedelta(days=1)).isoformat()},
        ).json()
        days = api.get(
            "/api/v1/aggregates",
            params={
                "bucket": "day",
                "since": T0.isoformat(),
                "until": (T0 + timedelta(days=2)).isoformat(),
            },
        ).json()
    assert starts(hours) == [T0 + timedelta(hours=20)]
    assert starts(days) == [T0]


def starts(report: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(p["ts"]) for s in report["series"] for p in s["points"]]
