"""Sums and means of values the contract accepts never overflow into a 5xx (both databases).

The contract lets a counter be any 64-bit integer and an attribute any finite float: a few
of them add up past SQLite's integer range or PostgreSQL's float8 range.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from shared.fields import INT64_MAX
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import Publisher, make_batch, topic, unique_agent_id, wait_until
from tests.cloud.test_summaries import T0, make_summary

pytestmark = pytest.mark.integration


def test_bandwidth_of_counters_near_the_64_bit_limit(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    for minute in range(3):
        summary = make_summary(agent, minute).model_copy(
            update={"raw_bytes": INT64_MAX - minute, "sent_bytes": INT64_MAX // 2}
        )
        publisher.publish(topic(agent, Channel.SUMMARY), encode(summary))

    def report() -> dict[str, object] | None:
        response = api.get("/api/v1/stats/bandwidth", params={"agent_id": agent})
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body if body["pipelines"] else None

    body = wait_until(report, what="the summaries")
    assert body["total"]["raw_bytes"] >= 3 * (INT64_MAX - 2) * (1 - 1e-9)  # type: ignore[index]
    series = api.get(
        "/api/v1/stats/bandwidth/series",
        params={"agent_id": agent, "bucket": "hour", "since": T0.isoformat(),
                "until": (T0 + timedelta(hours=1)).isoformat()},
    )  # fmt: skip
    assert series.status_code == 200, series.text


def test_sum_and_mean_of_attributes_near_the_float_limit(
    api: TestClient, publisher: Publisher, database_url: str
) -> None:
    sqlite = database_url.startswith("sqlite")
    agent = unique_agent_id()
    batch = make_batch(agent, 4, start=T0)
    big = [
        e.model_copy(update={"attributes": {"x": 1.7e308, "n": INT64_MAX}}) for e in batch.events
    ]
    publisher.publish(
        topic(agent, Channel.EVENTS), encode(batch.model_copy(update={"events": big}))
    )
    wait_until(
        lambda: api.get("/api/v1/events", params={"agent_id": agent}).json()["items"] or None,
        what="the events",
    )
    for attribute in ("x", "n"):
        for metric in ("avg", "max"):
            response = api.get(
                "/api/v1/aggregates",
                params={"metric": metric, "attribute": attribute, "bucket": "hour",
                        "agent_id": agent, "since": T0.isoformat(),
                        "until": (T0 + timedelta(hours=1)).isoformat()},
            )  # fmt: skip
            assert response.status_code == 200, (attribute, metric, response.text)
            (series,) = response.json()["series"]
            (point,) = series["points"]
            assert point["count"] == 4
            if sqlite and (attribute, metric) == ("x", "avg"):
                # SQLite adds a mean in floats: 4 x 1.7e308 passes the range, null not 5xx.
                assert point["value"] is None
            else:
                expected = 1.7e308 if attribute == "x" else INT64_MAX
                assert point["value"] == pytest.approx(expected)
