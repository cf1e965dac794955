"""Summaries published over MQTT feed ``GET /api/v1/stats/bandwidth/series``: bandwidth saved
per UTC hour or day of the windows' start, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.messages import PipelineSummary, encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher, client_as, ingest_of, topic, unique_agent_id, wait_until
from tests.cloud.test_summaries import T0, make_summary

pytestmark = pytest.mark.integration

SERIES = "/api/v1/stats/bandwidth/series"
TWO_DAYS = {"since": T0.isoformat(), "until": (T0 + timedelta(days=2)).isoformat()}
RAW = 375 * 2048 * 4  # make_summary's raw bytes for its default 375 samples


def publish(api: TestClient, publisher: Publisher, summaries: list[PipelineSummary]) -> None:
    worker = ingest_of(api)
    stored = worker.summaries_stored + len(summaries)
    for summary in summaries:
        publisher.publish(topic(summary.agent_id, Channel.SUMMARY), encode(summary))
    wait_until(lambda: worker.summaries_stored >= stored, what=f"{len(summaries)} summaries")


def series(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get(SERIES, params=params)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def points(report: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    return [(p["ts"], p["summaries"], p["raw_bytes"], p["sent_bytes"]) for p in report["points"]]


def test_bytes_add_up_per_hour_and_day_of_the_window_start(
    api: TestClient, publisher: Publisher
) -> None:
    press, door = unique_agent_id("press"), unique_agent_id("door")
    publish(
        api,
        publisher,
        [
            make_summary(press, 0, sent=500),  # 10:00
            make_summary(press, 59, sent=300),  # 10:59, ends 11:00: still the 10:00 hour
            make_summary(press, 60, sent=700),  # 11:00
            make_summary(press, 14 * 60, sent=100),  # 00:00 the next day
            make_summary(press, 0, pipeline="motor-current", samples=100, sent=200),
            make_summary(door, 61, pipeline="door-camera", samples=50, sent=4000),
        ],
    )

    hourly = series(api, agent_id=press, **TWO_DAYS)
    assert points(hourly) == [
        ("2026-11-22T10:00:00Z", 3, 2 * RAW + 100 * 8192, 1000),
        ("2026-11-22T11:00:00Z", 1, RAW, 700),
        ("2026-11-23T00:00:00Z", 1, RAW, 100),
    ]
    first = hourly["points"][0]
    assert first["saved_bytes"] == 2 * RAW + 100 * 8192 - 1000
    assert first["ratio"] == pytest.approx(1000 / (2 * RAW + 100 * 8192))
    assert (hourly["bucket"], hourly["agent_id"], hourly["pipeline"]) == ("hour", press, None)

    vibration = series(api, agent_id=press, pipeline="spindle-vibration", **TWO_DAYS)
    assert [p[1:] for p in points(vibration)] == [(2, 2 * RAW, 800), (1, RAW, 700), (1, RAW, 100)]
    camera = series(api, pipeline="door-camera", agent_id=door, **TWO_DAYS)
    assert points(camera) == [("2026-11-22T11:00:00Z", 1, 50 * 8192, 4000)]

    daily = series(api, agent_id=press, bucket="day", **TWO_DAYS)
    assert points(daily) == [
        ("2026-11-22T00:00:00Z", 4, 3 * RAW + 100 * 8192, 1700),
        ("2026-11-23T00:00:00Z", 1, RAW, 100),
    ]
    # The bandwidth report over the same range is the sum of the series.
    report = api.get("/api/v1/stats/bandwidth", params={"agent_id": press, **TWO_DAYS}).json()
    assert report["total"]["raw_bytes"] == sum(p["raw_bytes"] for p in daily["points"])
    assert report["total"]["saved_bytes"] == sum(p["saved_bytes"] for p in daily["points"])


def test_since_is_inclusive_and_until_exclusive_on_the_window_start(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    publish(api, publisher, [make_summary(agent, minute, sent=minute + 1) for minute in range(4)])

    middle = series(
        api,
        agent_id=agent,
        since=(T0 + timedelta(minutes=1)).isoformat(),
        until=(T0 + timedelta(minutes=3)).isoformat(),
    )
    assert points(middle) == [("2026-11-22T10:00:00Z", 2, 2 * RAW, 2 + 3)]
    assert middle["since"] == "2026-11-22T10:01:00Z"
    assert series(api, agent_id=unique_agent_id(), **TWO_DAYS)["points"] == []


def test_the_default_range_is_the_last_day(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    now = utcnow()
    recent, old = (
        make_summary(agent, 0, sent=sent).model_copy(
            update={"window_start": now - ago, "window_end": now - ago + timedelta(minutes=1)}
        )
        for ago, sent in ((timedelta(hours=1), 11), (timedelta(days=2), 22))
    )
    publish(api, publisher, [recent, old])

    report = series(api, agent_id=agent)
    assert [p["sent_bytes"] for p in report["points"]] == [11]
    since, until = (datetime.fromisoformat(report[key]) for key in ("since", "until"))
    assert until - since == timedelta(days=1)


def test_buckets_are_utc_days_whatever_the_database_session_time_zone(
    make_api: AppFactory, database_url: str, publisher: Publisher
) -> None:
    if database_url.startswith("postgresql"):
        database_url += "?options=-c%20TimeZone%3DAsia/Kolkata"  # a half-hour zone
    agent = unique_agent_id()
    with make_api(database_url=database_url) as api:
        publish(api, publisher, [make_summary(agent, 10 * 60 + 40)])  # 20:40 UTC, 02:10 IST
        report = series(api, agent_id=agent, bucket="day", **TWO_DAYS)
    assert points(report) == [("2026-11-22T00:00:00Z", 1, RAW, 600)]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "2026-11-22T11:00Z", "until": "2026-11-22T10:00Z"}, "until must be after"),
        ({"since": "2026-11-22T10:00:00"}, "timezone"),
        ({"bucket": "minute"}, "bucket"),
        ({"since": "2000-01-01T00:00Z", "until": "2026-01-01T00:00Z"}, "100000"),
    ],
)
def test_bad_queries_are_422_with_the_reason(
    make_api: AppFactory, params: dict[str, str], reason: str
) -> None:
    with make_api(ingest_enabled=False) as api:
        response = api.get(SERIES, params=params)
    assert response.status_code == 422
    assert reason in str(response.json()["detail"])


def test_agents_may_not_read_it_and_keys_need_read(make_api: AppFactory) -> None:
    with make_api(ingest_enabled=False) as api:
        enrolled = api.post("/api/v1/agents", json={"agent_id": "gw-series"})
        assert enrolled.status_code == 201, enrolled.text
        agent = client_as(api, basic=("gw-series", enrolled.json()["password"]))
        refused = agent.get(SERIES, params={"agent_id": "gw-series"})
        assert refused.status_code == 403
        assert "may not use this route" in refused.json()["detail"]
        assert client_as(api).get(SERIES).status_code == 401
        read = api.post("/api/v1/keys", json={"name": "dash", "scope": "read"}).json()["token"]
        assert client_as(api, read).get(SERIES).status_code == 200
        assert SERIES in api.get("/openapi.json").json()["paths"]
