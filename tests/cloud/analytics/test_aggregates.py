"""Events published over MQTT, counted and averaged per bucket by ``GET /api/v1/aggregates``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.messages import (
    AttributeValue,
    Event,
    EventBatch,
    ModelRef,
    encode,
    new_event_id,
    utcnow,
)
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import MODEL, Publisher, topic, unique_agent_id, wait_until

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat("2025-03-02T10:00:00+00:00")
DAY = {"since": T0.isoformat(), "until": (T0 + timedelta(days=1)).isoformat()}
MODEL_V2 = ModelRef(name=MODEL.name, version="2.0.0", sha256="ab" * 32)


def event(
    at: timedelta,
    label: str,
    score: float,
    *,
    pipeline: str = "spindle-vibration",
    kind: str = "anomaly",
    model: ModelRef = MODEL,
    **attributes: AttributeValue,
) -> Event:
    return Event(
        id=new_event_id(),
        pipeline=pipeline,
        kind=kind,
        state="instant",
        label=label,
        score=score,
        ts=T0 + at,
        seq=0,
        model=model,
        attributes=attributes,
    )


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def publish(api: TestClient, publisher: Publisher, batches: dict[str, list[Event]]) -> None:
    """Publish each agent's events as one batch and wait until all are stored."""
    for agent, events in batches.items():
        batch = EventBatch(agent_id=agent, sent_at=utcnow(), events=events)
        publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
    total = sum(len(events) for events in batches.values())

    def stored() -> bool:
        response = api.get("/api/v1/events", params={"limit": 1000, "since": "2000-01-01T00:00Z"})
        return len(response.json()["items"]) >= total

    wait_until(stored, what=f"{total} events to be stored")


def aggregates(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/aggregates", params=params)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def series_of(report: dict[str, Any]) -> dict[tuple[str, ...], list[tuple[datetime, float, int]]]:
    """Each series as (group values) -> [(bucket start, value, count)], for exact comparison."""
    return {
        tuple(s["group"].values()): [
            (datetime.fromisoformat(p["ts"]), p["value"], p["count"]) for p in s["points"]
        ]
        for s in report["series"]
    }


def hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture
def fleet(api: TestClient, publisher: Publisher) -> tuple[str, str]:
    """A press over two days and a door camera; scores and rms_g chosen to add up exactly."""
    press, door = unique_agent_id("press"), unique_agent_id("door")
    publish(
        api,
        publisher,
        {
            press: [
                event(minutes(5), "imbalance", 0.75, rms_g=1.0),
                event(minutes(10), "imbalance", 0.5, rms_g=2.0),
                event(minutes(50), "imbalance", 1.0, rms_g="high"),  # not a number: ignored
                event(minutes(20), "bearing", 0.25, rms_g=4.0),
                event(minutes(120), "imbalance", 0.5),  # no rms_g: ignored in its average
                event(minutes(180) - timedelta(milliseconds=1), "imbalance", 0.75),
                event(timedelta(days=1, hours=3), "imbalance", 0.25, model=MODEL_V2, rms_g=True),
            ],
            door: [
                event(minutes(70), "person", 0.125, pipeline="door-camera", kind="object", rms_g=3),
            ],
        },
    )
    return press, door


def test_hourly_counts_per_label(api: TestClient, fleet: tuple[str, str]) -> None:
    report = aggregates(api, group_by="label", **DAY)

    assert report["bucket"] == "hour"
    assert report["metric"] == "count"
    assert report["field"] is None
    assert datetime.fromisoformat(report["since"]) == T0
    assert series_of(report) == {
        ("bearing",): [(hour(0), 1, 1)],
        ("imbalance",): [(hour(0), 3, 3), (hour(2), 2, 2)],
        ("person",): [(hour(1), 1, 1)],
    }
    assert report["series"][0]["group"] == {"label": "bearing"}


def test_avg_min_max_of_score(api: TestClient, fleet: tuple[str, str]) -> None:
    press, _ = fleet
    expected = {"avg": (0.75, 0.625), "min": (0.5, 0.5), "max": (1.0, 0.75)}
    for metric, (first, second) in expected.items():
        report = aggregates(api, metric=metric, agent_id=press, label="imbalance", **DAY)
        assert report["field"] == "score"
        assert series_of(report) == {(): [(hour(0), first, 3), (hour(2), second, 2)]}, metric


def test_average_of_an_attribute_ignores_events_without_a_number(
    api: TestClient, fleet: tuple[str, str]
) -> None:
    report = aggregates(api, metric="avg", attribute="rms_g", since=T0.isoformat())

    assert report["field"] == "rms_g"
    # 10:00: 1, 2 and 4 ("high" is not a number); 11:00: the integer 3; 12:00 has no
    # rms_g at all and the next day's is a boolean, so those buckets are absent.
    assert series_of(report) == {(): [(hour(0), pytest.approx(7 / 3), 3), (hour(1), 3.0, 1)]}
    maxima = aggregates(api, metric="max", attribute="rms_g", group_by="label", **DAY)
    assert series_of(maxima) == {
        ("bearing",): [(hour(0), 4.0, 1)],
        ("imbalance",): [(hour(0), 2.0, 2)],
        ("person",): [(hour(1), 3.0, 1)],
    }


def test_day_and_minute_buckets(api: TestClient, fleet: tuple[str, str]) -> None:
    days = aggregates(
        api,
        bucket="day",
        since=(T0 - timedelta(hours=10)).isoformat(),
        until=(T0 + timedelta(days=2)).isoformat(),
    )
    midnight = T0.replace(hour=0)
    assert series_of(days) == {(): [(midnight, 7, 7), (midnight + timedelta(days=1), 1, 1)]}

    late = aggregates(api, bucket="minute", since=hour(2).isoformat(), until=hour(3).isoformat())
    assert series_of(late) == {(): [(hour(2), 1, 1), (hour(3) - minutes(1), 1, 1)]}


def test_filters_and_several_groups(api: TestClient, fleet: tuple[str, str]) -> None:
    press, door = fleet
    week = {"since": T0.isoformat(), "until": (T0 + timedelta(days=7)).isoformat()}

    by_version = aggregates(api, bucket="day", group_by="model_version", **week)
    assert series_of(by_version) == {
        ("1.0.0",): [(T0.replace(hour=0), 7, 7)],
        ("2.0.0",): [(T0.replace(hour=0) + timedelta(days=1), 1, 1)],
    }
    nested = aggregates(api, bucket="day", group_by=["agent_id", "kind"], **week)
    assert [s["group"] for s in nested["series"]] == sorted(
        [{"agent_id": door, "kind": "object"}, {"agent_id": press, "kind": "anomaly"}],
        key=lambda group: group["agent_id"],
    )
    assert series_of(aggregates(api, bucket="day", kind="object", **week)) == {
        (): [(T0.replace(hour=0), 1, 1)]
    }
    camera = aggregates(api, bucket="day", pipeline="door-camera", group_by="agent_id", **week)
    assert list(series_of(camera)) == [(door,)]
    assert aggregates(api, agent_id=unique_agent_id(), **week)["series"] == []


def test_the_default_window_is_the_last_day(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    now = utcnow()
    recent = event(now - T0 - timedelta(hours=1), "imbalance", 0.5)
    old = event(now - T0 - timedelta(hours=25), "imbalance", 0.5)
    publish(api, publisher, {agent: [recent, old]})

    report = aggregates(api)

    until = datetime.fromisoformat(report["until"])
    assert until - datetime.fromisoformat(report["since"]) == timedelta(hours=24)
    assert timedelta(0) <= until - now < timedelta(minutes=5)
    assert [p["count"] for s in report["series"] for p in s["points"]] == [1]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "2025-03-02T10:00Z", "until": "2025-03-02T10:00Z"}, "until must be after"),
        ({"since": "2025-03-02T11:00Z", "until": "2025-03-02T10:00Z"}, "until must be after"),
        ({"since": "2025-03-02T10:00:00"}, "timezone"),
        (
            {"bucket": "minute", "since": "2025-01-01T00:00Z", "until": "2025-04-01T00:00Z"},
            "100000",
        ),
        ({"metric": "median"}, "metric"),
        ({"bucket": "week"}, "bucket"),
        ({"group_by": "score"}, "group_by"),
        ({"metric": "avg", "attribute": "rms'g"}, "attribute"),
    ],
)
def test_bad_queries_are_422_with_the_reason(
    api: TestClient, params: dict[str, str], reason: str
) -> None:
    response = api.get("/api/v1/aggregates", params=params)

    assert response.status_code == 422
    assert reason in str(response.json()["detail"])


def test_a_range_of_exactly_max_buckets_is_accepted(api: TestClient) -> None:
    since = T0
    until = since + timedelta(hours=100_000)
    report = aggregates(api, since=since.isoformat(), until=until.isoformat())
    assert report["series"] == []


def test_buckets_are_utc_whatever_the_database_session_time_zone(
    make_api: AppFactory, database_url: str, publisher: Publisher
) -> None:
    if database_url.startswith("postgresql"):
        # A half-hour zone: date_trunc in session time would start hours at :30 UTC.
        database_url += "?options=-c%20TimeZone%3DAsia/Kolkata"
    with make_api(database_url=database_url) as api:
        publish(api, publisher, {unique_agent_id(): [event(minutes(10 * 60 + 40), "x", 0.5)]})

        days = aggregates(api, bucket="day", since=T0.isoformat(), until=hour(48).isoformat())
        hours = aggregates(api, since=T0.isoformat(), until=hour(24).isoformat())

    # 20:40 UTC is already the next day in Kolkata (02:10); the buckets stay in UTC.
    assert series_of(days) == {(): [(T0.replace(hour=0), 1, 1)]}
    assert series_of(hours) == {(): [(hour(10), 1, 1)]}


def test_crossings_counted_by_line_and_direction(api: TestClient, publisher: Publisher) -> None:
    camera = unique_agent_id("junction")

    def crossing(at: float, label: str, line: str, direction: str) -> Event:
        return event(minutes(at), label, 1.0, pipeline="junction", kind="line_crossing",
                     line=line, direction=direction)  # fmt: skip

    publish(
        api,
        publisher,
        {
            camera: [
                crossing(1, "car", "stop", "left_to_right"),
                crossing(2, "car", "stop", "left_to_right"),
                crossing(3, "bike", "stop", "right_to_left"),
                crossing(4, "car", "exit", "left_to_right"),
                event(minutes(5), "car", 1.0, zone="queue", occupancy=2, pipeline="junction",
                      kind="zone"),  # no line: not a crossing, left out
            ],
        },
    )  # fmt: skip
    report = aggregates(api, agent_id=camera, group_by_attribute=["line", "direction"], **DAY)
    assert {s["group"]["attributes.line"] for s in report["series"]} == {"stop", "exit"}
    assert series_of(report) == {
        ("exit", "left_to_right"): [(hour(0), 1.0, 1)],
        ("stop", "left_to_right"): [(hour(0), 2.0, 2)],
        ("stop", "right_to_left"): [(hour(0), 1.0, 1)],
    }
    by_label = aggregates(
        api, agent_id=camera, group_by="label", group_by_attribute="direction", **DAY
    )
    assert series_of(by_label)[("car", "left_to_right")] == [(hour(0), 3.0, 3)]


def test_a_group_by_attribute_that_is_not_a_plain_name_is_422(api: TestClient) -> None:
    response = api.get("/api/v1/aggregates", params={"group_by_attribute": "line'); drop"})
    assert response.status_code == 422
