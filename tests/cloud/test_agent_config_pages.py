"""``/api/v1/agent-configs`` reads only what it is asked, on SQLite and PostgreSQL: the list
comes in keyset pages by agent id (each agent once, ``configured`` for those with an overlay
only), and a fleet PUT picks its agents by id or label selector in the database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.tables import AgentRow

pytestmark = pytest.mark.integration

OVERLAY = {"pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.5}}}}}


def fleet(api: TestClient, labels: list[dict[str, str]]) -> list[str]:
    """Agents that reported, one per ``labels``, ids ascending in the list's order."""
    prefix = f"cfg-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{n:02d}" for n in range(len(labels))]
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        for agent_id, values in zip(ids, labels, strict=True):
            session.add(AgentRow(agent_id=agent_id, state="online", reason="", last_status={},
                                 heartbeat_s=30.0, labels=values))  # fmt: skip
        session.commit()
    return ids


def walk(api: TestClient, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    while True:
        response = api.get("/api/v1/agent-configs", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        if response.json()["next_cursor"] is None:
            return pages
        params["cursor"] = response.json()["next_cursor"]


def test_the_fleets_configurations_come_in_pages(api: TestClient) -> None:
    ids = fleet(api, [{} for _ in range(5)])
    for agent_id in ids[1], ids[3]:
        put = api.put(f"/api/v1/agents/{agent_id}/config", json={"overlay": OVERLAY})
        assert put.status_code == 200, put.text

    pages = walk(api, limit=2)

    # Agents of other tests may report to this app (retained statuses on the shared broker).
    assert len(pages) >= 3
    assert all(len(page) == 2 for page in pages[:-1])
    walked = [item["agent_id"] for page in pages for item in page]
    assert walked == sorted(set(walked))  # ascending, each once
    listed = [(item["agent_id"], item["state"]) for page in pages for item in page]
    mine = [pair for pair in listed if pair[0] in ids]
    assert mine == [(a, "pending" if a in (ids[1], ids[3]) else "none") for a in ids]
    configured = [item["agent_id"] for page in walk(api, configured=True) for item in page]
    assert configured == [ids[1], ids[3]]  # only overlays set in this test's database
    bad = api.get("/api/v1/agent-configs", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 400
    assert "cursor" in bad.json()["detail"]


def test_a_fleet_put_picks_its_agents_in_the_database(api: TestClient) -> None:
    site = f"plant-{uuid.uuid4().hex[:6]}"
    ids = fleet(
        api,
        [
            {"site": site, "line.no": "3"},
            {"site": site, "line.no": "3", "extra": "x"},
            {"site": site, "line.no": "4"},
            {"site": site},
            {},
        ],
    )

    by_labels = {"target": {"labels": {"site": site, "line.no": "3"}}, "overlay": OVERLAY}
    response = api.put("/api/v1/agent-configs", json=by_labels)
    assert response.status_code == 200, response.text
    assert [c["agent_id"] for c in response.json()] == ids[:2]

    by_ids = {"target": {"agent_ids": [ids[4], ids[2], "cfg-never-seen"]}, "overlay": OVERLAY}
    response = api.put("/api/v1/agent-configs", json=by_ids)
    assert [(c["agent_id"], c["desired"]["version"]) for c in response.json()] == [
        (ids[2], 1),
        (ids[4], 1),
    ]
    nobody = {"target": {"labels": {"site": site, "line.no": "9"}}, "overlay": OVERLAY}
    response = api.put("/api/v1/agent-configs", json=nobody)
    assert response.status_code == 422
    assert "matches no known agent" in response.json()["detail"]
