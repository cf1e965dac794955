"""`aiot demo`'s live view: what a dashboard shows, read from the public REST API and drawn
as rich tables (agents, rollouts, bandwidth saved, the newest events)."""

from __future__ import annotations

import time
from typing import Any


def show_live(console: Any, api_url: str, api_key: str, duration: float | None) -> None:
    import httpx
    from rich.live import Live

    deadline = time.monotonic() + duration if duration is not None else float("inf")
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        httpx.Client(base_url=api_url, timeout=5, headers=headers) as client,
        Live(console=console, refresh_per_second=2) as live,
    ):
        while time.monotonic() < deadline:
            events = client.get("/api/v1/events", params={"limit": 12}).json()["items"]
            agents = client.get("/api/v1/agents").json()
            bandwidth = client.get("/api/v1/stats/bandwidth").json()
            deployments = client.get("/api/v1/deployments", params={"limit": 3}).json()
            live.update(_render(events, agents, bandwidth, deployments))
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _render(
    events: list[dict[str, Any]],
    agents: Any,
    bandwidth: dict[str, Any],
    deployments: list[dict[str, Any]],
) -> Any:
    from rich.console import Group

    return Group(
        _fleet_table(agents),
        _rollouts_table(deployments),
        _bandwidth_table(bandwidth),
        _events_table(events),
    )


def _table(title: str, columns: tuple[str, ...]) -> Any:
    from rich.table import Table

    table = Table(title=title, expand=True)
    for column in columns:
        table.add_column(column)
    return table


def _fleet_table(agents: Any) -> Any:
    fleet = _table("Agents (GET /api/v1/agents)", ("agent", "state", "pipeline", "model",
                   "last update", "samples", "events out", "outbox"))  # fmt: skip
    for agent in agents:
        for pipeline in agent["pipelines"] or [{}]:
            model = pipeline.get("model") or {}
            update = pipeline.get("update") or {}
            fleet.add_row(
                agent["agent_id"],
                f"{agent['state']} ({agent['reason']})" if agent["reason"] else agent["state"],
                pipeline.get("name", "-"),
                f"{model.get('name', '-')} {model.get('version', '')}",
                f"{update['version']} {update['state']}" if update else "-",
                str(pipeline.get("samples_in", "-")),
                str(pipeline.get("events_out", "-")),
                str(agent["outbox_depth"]),
            )
    return fleet


def _events_table(events: list[dict[str, Any]]) -> Any:
    columns = ("time", "agent", "pipeline", "kind", "state", "label", "score", "model")
    feed = _table("Events in the cloud (GET /api/v1/events)", columns)
    for event in events:
        feed.add_row(
            event["ts"][11:23],
            event["agent_id"],
            event["pipeline"],
            event["kind"],
            event["state"],
            event["label"],
            f"{event['score']:.2f}",
            f"{event['model_name']} {event['model_version']}",
        )
    return feed


def _bandwidth_table(bandwidth: dict[str, Any]) -> Any:
    columns = ("pipeline", "read at the edge", "sent to the cloud", "sent / read")
    saved = _table("What the edge saved (GET /api/v1/stats/bandwidth)", columns)
    for row in bandwidth["pipelines"]:
        ratio = f"{row['ratio']:.4%}" if row["ratio"] is not None else "-"
        saved.add_row(row["pipeline"], _size(row["raw_bytes"]), _size(row["sent_bytes"]), ratio)
    return saved


def _rollouts_table(deployments: list[dict[str, Any]]) -> Any:
    rollouts = _table("Rollouts (GET /api/v1/deployments)",
                      ("id", "model", "pipeline", "state", "agents", "reason"))  # fmt: skip
    for deployment in deployments:
        agents_state = ", ".join(f"{a['agent_id']}: {a['state']}" for a in deployment["agents"])
        rollouts.add_row(
            str(deployment["id"]),
            f"{deployment['model']} {deployment['version']}",
            deployment["pipeline"],
            deployment["state"],
            agents_state,
            deployment["reason"] or "-",
        )
    return rollouts


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
