"""Summaries published over MQTT feed ``GET /api/v1/stats/bandwidth``, once each."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient

from cloud_api.db import alembic_config, create_db_engine, migrate
from shared.messages import PipelineSummary, SignalStats, encode, utcnow
from shared.topics import Channel
from tests.cloud.helpers import (
    MODEL,
    Publisher,
    ingest_of,
    make_status,
    topic,
    unique_agent_id,
    wait_until,
)

pytestmark = pytest.mark.integration

WINDOW = timedelta(minutes=1)
T0 = datetime.fromisoformat("2026-11-22T10:00:00+00:00")


def make_summary(
    agent_id: str,
    minute: int,
    *,
    pipeline: str = "spindle-vibration",
    samples: int = 375,
    sent: int = 600,
    events: dict[str, int] | None = None,
) -> PipelineSummary:
    start = T0 + minute * WINDOW
    return PipelineSummary(
        agent_id=agent_id,
        pipeline=pipeline,
        window_start=start,
        window_end=start + WINDOW,
        samples_in=samples,
        inferences=samples,
        events_by_label=events or {},
        signals={"score": SignalStats(min=0.01, mean=0.1, max=0.9, count=samples)},
        raw_bytes=samples * 2048 * 4,
        sent_bytes=sent,
        model=MODEL,
    )


def bandwidth(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/stats/bandwidth", params=params)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def rows_by_key(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["agent_id"], r["pipeline"]): r for r in report["pipelines"]}


def test_summaries_add_up_per_pipeline_and_for_the_fleet(
    api: TestClient, publisher: Publisher
) -> None:
    press, door = unique_agent_id("press"), unique_agent_id("door")
    published = [
        make_summary(press, 0, sent=500, events={"imbalance": 2}),
        make_summary(press, 1, sent=300),
        make_summary(press, 2, sent=800, events={"imbalance": 1, "impact": 1}),
        make_summary(press, 0, pipeline="motor-current", samples=100, sent=200),
        make_summary(door, 0, pipeline="door-camera", samples=50, sent=4000, events={"car": 3}),
    ]
    for summary in published:
        publisher.publish(topic(summary.agent_id, Channel.SUMMARY), encode(summary))
    wait_until(lambda: ingest_of(api).summaries_stored >= 5, what="five summaries stored")

    report = bandwidth(api, agent_id=press)
    rows = rows_by_key(report)
    vib = rows[(press, "spindle-vibration")]
    assert vib["summaries"] == 3
    assert vib["samples_in"] == vib["inferences"] == 3 * 375
    assert vib["raw_bytes"] == 3 * 375 * 8192
    assert vib["sent_bytes"] == 1600
    assert vib["saved_bytes"] == 3 * 375 * 8192 - 1600
    assert vib["ratio"] == pytest.approx(1600 / (3 * 375 * 8192))
    assert vib["events"] == 4
    assert vib["first_window_start"] == "2026-11-22T10:00:00Z"
    assert vib["last_window_end"] == "2026-11-22T10:03:00Z"
    assert rows[(press, "motor-current")]["raw_bytes"] == 100 * 8192
    assert set(rows) == {(press, "spindle-vibration"), (press, "motor-current")}
    total = report["total"]
    assert (total["agents"], total["pipelines"], total["summaries"]) == (1, 2, 4)
    assert total["raw_bytes"] == (3 * 375 + 100) * 8192
    assert total["sent_bytes"] == 1800

    both = bandwidth(api, pipeline="door-camera", agent_id=door)
    assert [r["sent_bytes"] for r in both["pipelines"]] == [4000]
    assert both["total"]["events"] == 3


def test_since_and_until_select_windows_by_their_start(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    for minute in range(5):
        summary = make_summary(agent, minute, sent=100 * (minute + 1))
        publisher.publish(topic(agent, Channel.SUMMARY), encode(summary))
    wait_until(
        lambda: bandwidth(api, agent_id=agent)["total"]["summaries"] == 5, what="five summaries"
    )

    middle = bandwidth(
        api,
        agent_id=agent,
        since=(T0 + WINDOW).isoformat(),
        until=(T0 + 3 * WINDOW).isoformat(),
    )
    assert middle["total"]["summaries"] == 2
    assert middle["total"]["sent_bytes"] == 200 + 300
    assert middle["since"] == "2026-11-22T10:01:00Z"
    later = bandwidth(api, agent_id=agent, since=(T0 + 3 * WINDOW).isoformat())
    assert later["total"]["sent_bytes"] == 400 + 500
    nothing = bandwidth(api, agent_id=agent, until=T0.isoformat())
    assert nothing["pipelines"] == []
    assert nothing["total"]["ratio"] is None
    assert nothing["total"]["raw_bytes"] == 0
    refused = api.get(
        "/api/v1/stats/bandwidth",
        params={"since": T0.isoformat(), "until": T0.isoformat()},
    )
    assert refused.status_code == 422
    naive = api.get("/api/v1/stats/bandwidth", params={"since": "2026-11-22T10:00:00"})
    assert naive.status_code == 422


def test_a_redelivered_summary_is_counted_once(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    payload = encode(make_summary(agent, 0, sent=700))
    worker = ingest_of(api)
    publisher.publish(topic(agent, Channel.SUMMARY), payload)
    publisher.publish(topic(agent, Channel.SUMMARY), payload)

    wait_until(lambda: worker.summary_duplicates >= 1, what="the second copy to be ingested")

    total = bandwidth(api, agent_id=agent)["total"]
    assert (total["summaries"], total["sent_bytes"]) == (1, 700)
    assert "aiot_ingest_duplicate_summaries_total 1.0" in api.get("/metrics").text


def test_invalid_summaries_are_dead_lettered_and_ingest_goes_on(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    summary_topic = topic(agent, Channel.SUMMARY)
    backwards = json.loads(encode(make_summary(agent, 0)))
    backwards["signals"]["score"]["min"] = 5.0
    unknown_key = json.loads(encode(make_summary(agent, 1)))
    unknown_key["bytes_saved"] = 1
    impostor = encode(make_summary(unique_agent_id("impostor"), 2))
    for payload in (json.dumps(backwards).encode(), json.dumps(unknown_key).encode(), impostor):
        publisher.publish(summary_topic, payload)
    publisher.publish(summary_topic, encode(make_summary(agent, 3, sent=42)))

    wait_until(
        lambda: bandwidth(api, agent_id=agent)["total"]["summaries"] == 1,
        what="the valid summary after the bad ones",
    )

    def three_letters() -> list[dict[str, Any]] | None:
        page = api.get("/api/v1/dead-letters").json()
        letters = [d for d in page["items"] if d["topic"] == summary_topic]
        return letters if len(letters) >= 3 else None

    reasons = sorted(letter["reason"] for letter in wait_until(three_letters, what="3 letters"))
    assert any("min <= mean <= max" in r for r in reasons)
    assert any("bytes_saved" in r for r in reasons)
    assert any("does not match topic" in r for r in reasons)
    assert bandwidth(api, agent_id=agent)["total"]["sent_bytes"] == 42


def test_agents_report_their_byte_counters(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    status = json.loads(encode(make_status(agent)))
    status["pipelines"][0].update(raw_bytes=8192 * 100, sent_bytes=900)
    publisher.publish(topic(agent, Channel.STATUS), json.dumps(status).encode())

    def reported() -> dict[str, Any] | None:
        response = api.get(f"/api/v1/agents/{agent}")
        return response.json() if response.status_code == 200 else None

    pipeline = wait_until(reported, what="the status")["pipelines"][0]
    assert (pipeline["raw_bytes"], pipeline["sent_bytes"]) == (819200, 900)
    assert "/api/v1/stats/bandwidth" in api.get("/openapi.json").json()["paths"]


def test_the_summaries_revision_downgrades_and_upgrades(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        config = alembic_config(engine)
        command.downgrade(config, "0001")
        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT COUNT(*) FROM summaries").scalar() == 0
    finally:
        engine.dispose()


def test_fresh_summaries_are_reported_all_time_by_default(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    now = utcnow()
    summary = make_summary(agent, 0).model_copy(
        update={"window_start": now - WINDOW, "window_end": now}
    )
    publisher.publish(topic(agent, Channel.SUMMARY), encode(summary))
    wait_until(lambda: bandwidth(api, agent_id=agent)["pipelines"], what="the summary")
    assert bandwidth(api)["total"]["summaries"] >= 1
