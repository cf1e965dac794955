"""Summaries published over MQTT become hourly signal rollups that ``GET /api/v1/signals``
returns per hour and day: exact min/max/count, the count-weighted mean, once per summary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from cloud_api.analytics import rollups
from cloud_api.analytics import signals as signals_module
from cloud_api.db import alembic_config, create_db_engine, migrate
from cloud_api.ingest.parse import Work, summary_row
from cloud_api.ingest.writers import writer_for
from cloud_api.rollup_tables import SIGNAL_DAY_ROLLUPS, SIGNAL_ROLLUPS
from cloud_api.tables import SUMMARIES
from shared.fields import INT64_MAX
from shared.messages import PipelineSummary, SignalStats, encode
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    MODEL,
    Publisher,
    client_as,
    ingest_of,
    topic,
    unique_agent_id,
    wait_until,
)

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat("2026-05-04T08:00:00+00:00")
TWO_DAYS = {"since": T0.isoformat(), "until": (T0 + timedelta(days=2)).isoformat()}
Stats = tuple[float, float, float, int]
"""min, mean, max, count of one signal in one summary."""
Point = tuple[str, float, float | None, float, int]
"""ts, min, mean, max, count of one bucket as the route answers it."""
Series = dict[tuple[str, str, str], list[Point]]


def summary(
    agent_id: str, minutes: float, pipeline: str = "spindle-vibration", **signals: Stats
) -> PipelineSummary:
    start = T0 + timedelta(minutes=minutes)
    return PipelineSummary(
        agent_id=agent_id,
        pipeline=pipeline,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        samples_in=100,
        inferences=100,
        signals={
            name: SignalStats(min=low, mean=mean, max=high, count=count)
            for name, (low, mean, high, count) in signals.items()
        },
        raw_bytes=400,
        sent_bytes=40,
        model=MODEL,
    )


def publish(api: TestClient, publisher: Publisher, summaries: list[PipelineSummary]) -> None:
    worker = ingest_of(api)
    before = worker.summaries_stored
    for item in summaries:
        publisher.publish(topic(item.agent_id, Channel.SUMMARY), encode(item))
    wait_until(
        lambda: worker.summaries_stored >= before + len(summaries),
        what=f"{len(summaries)} summaries stored",
    )


def signals(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/signals", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def expected(summaries: Iterable[PipelineSummary], bucket: str) -> Series:
    """What the route must answer, computed here from the summaries themselves."""
    acc: dict[tuple[str, str, str], dict[str, list[Any]]] = {}
    for item in summaries:
        start = item.window_start.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            start = start.replace(hour=0)
        for name, s in item.signals.items():
            buckets = acc.setdefault((item.agent_id, item.pipeline, name), {})
            ts = start.isoformat().replace("+00:00", "Z")
            b = buckets.setdefault(ts, [s.min, 0.0, s.max, 0])
            b[0], b[2] = min(b[0], s.min), max(b[2], s.max)
            b[1] += s.mean * s.count
            b[3] += s.count
    return {
        key: [(ts, low, total / n, high, n) for ts, (low, total, high, n) in sorted(b.items())]
        for key, b in acc.items()
    }


def as_series(report: dict[str, Any]) -> Series:
    return {
        (s["agent_id"], s["pipeline"], s["signal"]): [
            (p["ts"], p["min"], p["mean"], p["max"], p["count"]) for p in s["points"]
        ]
        for s in report["series"]
    }


def assert_same(got: Series, want: Series) -> None:
    assert got.keys() == want.keys()
    for key, points in want.items():
        assert [(ts, low, high, n) for ts, low, _, high, n in got[key]] == [
            (ts, low, high, n) for ts, low, _, high, n in points
        ], key
        assert [p[2] for p in got[key]] == pytest.approx([p[2] for p in points], rel=1e-12), key


def fleet(press: str, pump: str) -> list[PipelineSummary]:
    return [
        summary(press, 0, score=(0.01, 0.1, 0.9, 375), rms_g=(0.2, 0.5, 1.5, 375)),
        summary(press, 20, score=(0.05, 0.3, 0.7, 125), rms_g=(0.1, 0.4, 2.5, 125)),
        summary(press, 59.5, score=(0.0, 0.2, 0.95, 250)),
        summary(press, 70, score=(0.2, 0.6, 0.8, 100)),
        summary(press, 24 * 60 + 5, score=(0.3, 0.35, 0.4, 10)),
        summary(press, 3, pipeline="motor-current", phase_a_mean=(9.5, 10.0, 10.5, 50)),
        summary(pump, 30, pipeline="pump-pressure", pressure_mean=(2.0, 2.5, 3.0, 20)),
    ]


def test_hour_and_day_buckets_are_exact(api: TestClient, publisher: Publisher) -> None:
    press, pump = unique_agent_id("press"), unique_agent_id("pump")
    published = fleet(press, pump)
    publish(api, publisher, published)

    hours = signals(api, agent_id=press, **TWO_DAYS)
    days = signals(api, agent_id=press, bucket="day", **TWO_DAYS)

    mine = [s for s in published if s.agent_id == press]
    assert_same(as_series(hours), expected(mine, "hour"))
    assert_same(as_series(days), expected(mine, "day"))
    # The first hour of the score, by hand: three summaries, 750 values.
    ts, low, mean, high, count = as_series(hours)[(press, "spindle-vibration", "score")][0]
    assert (ts, low, high, count) == ("2026-05-04T08:00:00Z", 0.0, 0.95, 750)
    assert mean == pytest.approx((0.1 * 375 + 0.3 * 125 + 0.2 * 250) / 750)
    assert (hours["bucket"], days["bucket"]) == ("hour", "day")
    # Series come sorted by agent, pipeline and signal; the fleet's has every agent.
    assert [s["signal"] for s in hours["series"]] == ["phase_a_mean", "rms_g", "score"]
    assert_same(as_series(signals(api, **TWO_DAYS)), expected(published, "hour"))


def test_a_redelivered_summary_counts_once(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    once = summary(agent, 5, score=(0.1, 0.2, 0.3, 40))
    worker = ingest_of(api)
    publish(api, publisher, [once])
    publisher.publish(topic(agent, Channel.SUMMARY), encode(once))
    wait_until(lambda: worker.summary_duplicates >= 1, what="the second copy to be ingested")

    assert_same(as_series(signals(api, agent_id=agent, **TWO_DAYS)), expected([once], "hour"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def stored_rollups(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(SIGNAL_ROLLUPS))]
    return sorted(rows, key=lambda row: tuple(row[k] for k in rollups.SIGNAL_KEY))


def test_only_summaries_inserted_feed_the_rollups_even_twice_in_one_batch(engine: Engine) -> None:
    writer = writer_for(engine)
    first = summary("press-1", 5, score=(0.1, 0.2, 0.3, 40))
    second = summary("press-1", 6, score=(0.0, 0.5, 0.6, 10))
    rows = [summary_row(first, 0.0), summary_row(first, 0.0), summary_row(second, 0.0)]

    stats = writer.commit(Work(summaries=rows), messages=3)
    again = writer.commit(Work(summaries=rows[:2]), messages=2)

    assert (stats.summaries_stored, stats.summary_duplicates) == (2, 1)
    assert (again.summaries_stored, again.summary_duplicates) == (0, 2)
    (row,) = stored_rollups(engine)
    assert (row["count"], row["min"], row["max"]) == (50, 0.0, 0.6)
    assert row["sum"] == pytest.approx(0.2 * 40 + 0.5 * 10)
    assert row["hour"] == T0


def test_sums_and_counts_at_the_limits_saturate_instead_of_failing(
    api: TestClient, database_url: str
) -> None:
    agent = unique_agent_id()
    huge = [summary(agent, m, x=(1.7e308, 1.7e308, 1.7e308, INT64_MAX)) for m in range(3)]
    engine = create_db_engine(database_url)
    try:
        writer = writer_for(engine)
        for item in huge:  # each its own transaction: the upsert adds to a stored row
            assert writer.commit(Work(summaries=[summary_row(item, 0.0)]), 1).summaries_stored
    finally:
        engine.dispose()

    whole_days = {"since": T0.replace(hour=0).isoformat(), "until": TWO_DAYS["until"]}
    for bucket, window in (("hour", TWO_DAYS), ("day", TWO_DAYS), ("day", whole_days)):
        (points,) = as_series(signals(api, agent_id=agent, bucket=bucket, **window)).values()
        assert points == [(points[0][0], 1.7e308, None, 1.7e308, points[0][4])]
        assert points[0][4] >= INT64_MAX


def test_whole_days_and_partial_edge_days_add_up_alike(
    api: TestClient, publisher: Publisher
) -> None:
    """Whole days come from the daily rollups, the partial first and last days from their
    hours: every range answers what the summaries add up to over the hours it overlaps."""
    agent = unique_agent_id("press")
    published = [
        summary(agent, minutes, score=(0.05 * (i % 7), 0.5, 1.0 + i, 10 + i))
        for i, minutes in enumerate(range(-600, 3 * 24 * 60, 170))
    ]
    publish(api, publisher, published)
    for since, until in [
        (T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=3)),  # whole days only
        (T0 - timedelta(hours=3, minutes=30), T0 + timedelta(days=2, minutes=1)),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=5)),  # within one day
    ]:
        first = rollups.hour_of(since)
        inside = [s for s in published if first <= rollups.hour_of(s.window_start) < until]
        window = {"since": since.isoformat(), "until": until.isoformat()}
        got = as_series(signals(api, agent_id=agent, bucket="day", **window))
        assert_same(got, expected(inside, "day"))


def test_an_answer_past_the_points_bound_is_422_with_the_ways_to_narrow_it(
    api: TestClient, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = unique_agent_id()
    publish(api, publisher, [summary(agent, 60 * h, score=(0.1, 0.2, 0.3, 5)) for h in range(4)])
    monkeypatch.setattr(signals_module, "MAX_POINTS", 3)

    days = signals(api, agent_id=agent, bucket="day", **TWO_DAYS)
    hours = api.get("/api/v1/signals", params={"agent_id": agent, "bucket": "hour", **TWO_DAYS})

    assert len(days["series"][0]["points"]) == 1
    assert hours.status_code == 422, hours.text
    assert "more than 3 points" in hours.json()["detail"]
    assert "bucket=day" in hours.json()["detail"]


def test_filters(api: TestClient, publisher: Publisher) -> None:
    press, pump = unique_agent_id("press"), unique_agent_id("pump")
    published = fleet(press, pump)
    publish(api, publisher, published)
    agents = {press, pump}

    def keys(**params: Any) -> set[tuple[str, ...]]:
        return {k for k in as_series(signals(api, **TWO_DAYS | params)) if k[0] in agents}

    assert keys(pipeline="pump-pressure") == {(pump, "pump-pressure", "pressure_mean")}
    assert keys(signal=["score", "pressure_mean"]) == {
        (press, "spindle-vibration", "score"),
        (pump, "pump-pressure", "pressure_mean"),
    }
    assert keys(agent_id=pump, signal="score") == set()
    # Every hour that overlaps [since, until): 08:30-09:00 takes the whole 08:00 hour.
    half = {"since": (T0 + timedelta(minutes=30)).isoformat(),
            "until": (T0 + timedelta(minutes=60)).isoformat()}  # fmt: skip
    (points,) = as_series(
        signals(api, agent_id=press, pipeline="spindle-vibration", signal="score", **half)
    ).values()
    assert [(ts, n) for ts, _, _, _, n in points] == [("2026-05-04T08:00:00Z", 750)]


def test_day_buckets_are_utc_whatever_the_session_time_zone(
    make_api: AppFactory, database_url: str, publisher: Publisher
) -> None:
    if database_url.startswith("postgresql"):
        database_url += "?options=-c%20TimeZone%3DAsia/Kolkata"
    agent = unique_agent_id()
    late = summary(agent, 15 * 60 + 40, score=(0.1, 0.2, 0.3, 5))  # 23:40 UTC, 05:10 in Kolkata
    with make_api(database_url=database_url) as api:
        publish(api, publisher, [late])
        days = as_series(signals(api, agent_id=agent, bucket="day", **TWO_DAYS))
        hours = as_series(signals(api, agent_id=agent, **TWO_DAYS))
    assert [p[0] for p in days[(agent, "spindle-vibration", "score")]] == ["2026-05-04T00:00:00Z"]
    assert [p[0] for p in hours[(agent, "spindle-vibration", "score")]] == ["2026-05-04T23:00:00Z"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"bucket": "minute"}, "bucket"),
        ({"signal": "rms g"}, "signal"),
        ({"signal": ["s"] * 33}, "signal"),
        ({"agent_id": "no spaces"}, "agent_id"),
        ({"pipeline": "x" * 65}, "pipeline"),
        ({"since": "1700000000"}, "since"),
        ({"since": "2026-05-04T10:00:00Z", "until": "2026-05-04T10:00:00Z"}, "until must be after"),
        ({"since": "1990-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "more than 100000"),
    ],
)
def test_bad_queries_are_422_with_the_reason(
    api: TestClient, params: dict[str, Any], reason: str
) -> None:
    response = api.get("/api/v1/signals", params=params)

    assert response.status_code == 422, response.text
    assert reason in str(response.json()["detail"])


def test_signals_need_a_read_key(api: TestClient) -> None:
    assert client_as(api).get("/api/v1/signals").status_code == 401


def test_the_migration_backfills_rollups_from_stored_summaries(engine: Engine) -> None:
    published = fleet("press-1", "pump-1")
    rows = [summary_row(item, 0.0) for item in published]
    config = alembic_config(engine)
    command.downgrade(config, "0009")
    with engine.begin() as conn:
        conn.execute(insert(SUMMARIES), rows)
    command.upgrade(config, "head")

    stored = stored_rollups(engine)
    want = rollups.signal_rollup_rows(rows)
    assert [{**r, "sum": pytest.approx(r["sum"])} for r in want] == stored
    with engine.connect() as conn:
        days = [dict(row._mapping) for row in conn.execute(select(SIGNAL_DAY_ROLLUPS))]
    want_days = rollups.signal_day_rows(want)
    assert sorted(days, key=lambda r: tuple(r[k] for k in rollups.SIGNAL_DAY_KEY)) == [
        {**r, "sum": pytest.approx(r["sum"])} for r in want_days
    ]
