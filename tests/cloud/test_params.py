"""Every query and path parameter has a range: outside it is a 4xx naming the parameter.

Each test runs on SQLite and on PostgreSQL: the values here are the ones that used to reach
the database and come back as 5xx (a time that overflows once its offset is applied, an id
past 64 bits, a NUL in text, a deeply nested cursor).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.cursors import MAX_CURSOR, EventPosition, encode_cursor
from cloud_api.params import INT64_MAX, MAX_TIME, MIN_TIME
from cloud_api.tables import DeadLetterRow
from shared.messages import new_event_id, utcnow
from tests.cloud.conftest import AppFactory

pytestmark = pytest.mark.integration

TIMED_ROUTES = [
    "/api/v1/events",
    "/api/v1/aggregates",
    "/api/v1/stats/bandwidth",
    "/api/v1/stats/bandwidth/series",
]
OUT_OF_RANGE_TIMES = [
    "9999-12-31T23:59:59-05:00",  # the year 10000 in UTC
    "0001-01-01T00:00:00+01:00",  # the year 0 in UTC
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:30:00+01:00",  # 1969 in UTC
]


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(ingest_enabled=False) as client:
        yield client


def refused(response: Any, status: int, *where: str) -> str:
    """The detail of a refusal, after checking its status and that it names ``where``."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):
        assert [issue["loc"] for issue in detail] == [list(where)], detail
    else:
        assert where[-1] in detail, detail
    return str(detail)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("value", OUT_OF_RANGE_TIMES)
@pytest.mark.parametrize("route", TIMED_ROUTES)
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_time_outside_1970_9999_once_offset_is_422(
    api: TestClient, route: str, name: str, value: str
) -> None:
    detail = refused(api.get(route, params={name: value}), 422, "query", name)
    assert "1970-01-01T00:00:00Z" in detail


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (MIN_TIME, MIN_TIME + timedelta(hours=2)),
        ("1970-01-01T01:00:00+01:00", "1970-01-01T12:00:00-05:00"),
        (MAX_TIME - timedelta(minutes=30), MAX_TIME),  # inside the last hour there is
        (MAX_TIME - timedelta(hours=5, minutes=30), "9999-12-31T18:59:59.999999-05:00"),
    ],
)
def test_times_at_the_ends_of_the_range_are_answered(
    api: TestClient, since: Any, until: Any
) -> None:
    params = {"since": str(since).replace(" ", "T"), "until": str(until).replace(" ", "T")}
    for route in TIMED_ROUTES:
        response = api.get(route, params=params)
        assert response.status_code == 200, (route, response.text)
    report = api.get("/api/v1/aggregates", params={**params, "bucket": "minute"}).json()
    assert report["series"] == []
    assert report["since"].startswith(params["since"][:4])


@pytest.mark.parametrize("value", [str(INT64_MAX + 1), str(2**100), "0", "-1", "1e3", "x"])
def test_a_deployment_id_outside_64_bits_is_422(api: TestClient, value: str) -> None:
    refused(api.get(f"/api/v1/deployments/{value}"), 422, "path", "deployment_id")
    refused(api.post(f"/api/v1/deployments/{value}/cancel"), 422, "path", "deployment_id")


def test_the_largest_64_bit_id_is_a_plain_404(api: TestClient) -> None:
    response = api.get(f"/api/v1/deployments/{INT64_MAX}")
    assert response.status_code == 404
    assert str(INT64_MAX) in response.json()["detail"]


@pytest.mark.parametrize(
    ("route", "name"),
    [
        ("/api/v1/events", "label"),
        ("/api/v1/events", "pipeline"),
        ("/api/v1/events", "agent_id"),
        ("/api/v1/events", "kind"),
        ("/api/v1/aggregates", "label"),
        ("/api/v1/aggregates", "pipeline"),
        ("/api/v1/stats/bandwidth", "agent_id"),
        ("/api/v1/stats/bandwidth/series", "pipeline"),
    ],
)
def test_nul_in_a_filter_is_422(api: TestClient, route: str, name: str) -> None:
    refused(api.get(route, params={name: "bad\x00value"}), 422, "query", name)


def test_text_past_its_length_is_422(api: TestClient) -> None:
    refused(api.get("/api/v1/events", params={"label": "x" * 129}), 422, "query", "label")
    refused(api.get("/api/v1/events", params={"pipeline": "p" * 65}), 422, "query", "pipeline")


def test_nul_in_a_path_or_body_is_422(api: TestClient) -> None:
    refused(api.get("/api/v1/agents/bad%00agent"), 422, "path", "agent_id")
    refused(api.post("/api/v1/agents/bad%00agent/credentials"), 422, "path", "agent_id")
    refused(api.delete("/api/v1/keys/0123456789a%00"), 422, "path", "key_id")
    response = api.post("/api/v1/keys", json={"name": "bad\x00name", "scope": "read"})
    refused(response, 422, "body", "name")
    response = api.post("/api/v1/agents", json={"agent_id": "a-1", "labels": {"site": "x\x00"}})
    refused(response, 422, "body", "labels", "site")
    deployment = {
        "model": "m",
        "version": "1",
        "pipeline": "p",
        "target": {"labels": {"site": "bad\x00site"}},
    }
    refused(
        api.post("/api/v1/deployments", json=deployment), 422, "body", "target", "labels", "site"
    )


def test_a_label_with_spaces_and_unicode_is_a_plain_filter(api: TestClient) -> None:
    response = api.get("/api/v1/events", params={"label": "Tür offen ✓"})
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "cursor",
    [
        b64("[" * 180 + "]" * 180),  # deep nesting, short enough to get through
        b64('{"ts": "0001-01-01T00:00:00+01:00", "id": "' + new_event_id() + '"}'),
        b64('{"ts": "2026-01-01T00:00:00Z", "id": "' + new_event_id() + '", "x": 1}'),
        b64('{"ts": "2026-01-01T00:00:00Z", "id": "bad\\u0000id"}'),
        b64('["2026-01-01T00:00:00", "' + new_event_id() + '"]'),  # naive time
        b64("null"),
        "not-a-cursor",
        "AAAA",
    ],
)
def test_a_cursor_that_is_not_ours_is_400_naming_it(api: TestClient, cursor: str) -> None:
    refused(api.get("/api/v1/events", params={"cursor": cursor}), 400, "cursor")


@pytest.mark.parametrize(
    "cursor", ["W" * (MAX_CURSOR + 1), b64("[" * 5000), "abc=", "a b", "Zm9v\x00", ""]
)
def test_a_cursor_too_long_or_outside_base64url_is_422(api: TestClient, cursor: str) -> None:
    refused(api.get("/api/v1/events", params={"cursor": cursor}), 422, "query", "cursor")
    refused(api.get("/api/v1/dead-letters", params={"cursor": cursor}), 422, "query", "cursor")


def test_cursors_of_the_previous_format_still_page(api: TestClient) -> None:
    event_id = new_event_id()
    old = b64(json.dumps(["2026-01-01T00:00:00+00:00", event_id]))
    assert api.get("/api/v1/events", params={"cursor": old}).status_code == 200
    new = encode_cursor(EventPosition.model_validate({"ts": utcnow(), "id": event_id}))
    assert api.get("/api/v1/events", params={"cursor": new}).status_code == 200


@pytest.mark.parametrize("position", ['{"id": 0}', f'{{"id": {INT64_MAX + 1}}}', '{"id": "7"}'])
def test_a_dead_letter_cursor_out_of_range_is_400(api: TestClient, position: str) -> None:
    response = api.get("/api/v1/dead-letters", params={"cursor": b64(position)})
    refused(response, 400, "cursor")


def test_dead_letters_page_newest_first_with_a_cursor(api: TestClient) -> None:
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        session.add_all(
            DeadLetterRow(
                topic=f"aiot/v1/agents/a/events/{i}",
                payload=f"payload {i}",
                payload_size=9,
                reason="bad",
                received_at=utcnow(),
            )
            for i in range(7)
        )
        session.commit()

    seen: list[int] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        response = api.get("/api/v1/dead-letters", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert pages == 3
    assert len(seen) == 7
    assert seen == sorted(seen, reverse=True), "newest first, no letter twice"
    everything = api.get("/api/v1/dead-letters").json()
    assert [item["id"] for item in everything["items"]] == seen
    assert everything["next_cursor"] is None


def test_the_contract_states_the_ranges_and_the_refusals(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    events = spec["paths"]["/api/v1/events"]["get"]
    params = {p["name"]: p for p in events["parameters"]}
    assert "1970-01-01T00:00:00Z" in params["since"]["description"]
    assert params["cursor"]["schema"]["anyOf"][0]["maxLength"] == MAX_CURSOR
    label = params["label"]["schema"]["anyOf"][0]
    assert (label["maxLength"], label["pattern"]) == (128, r"^[^\x00]*$")
    for code in ("400", "401", "403", "422"):
        schema = events["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, code
    deployment = spec["paths"]["/api/v1/deployments/{deployment_id}"]["get"]
    (path_id,) = deployment["parameters"]
    assert path_id["schema"]["maximum"] == INT64_MAX
    assert {"401", "403", "404", "422"} <= set(deployment["responses"])
    dead_letters = spec["paths"]["/api/v1/dead-letters"]["get"]
    assert {p["name"] for p in dead_letters["parameters"]} == {"limit", "cursor"}
    page = dead_letters["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/DeadLetterPage"}
