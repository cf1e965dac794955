"""`aiot placement`: where each pipeline's model should run, from the cloud's measurements.

Talks to the cloud's REST API (``GET /api/v1/placement``) and shows one row per agent's
pipeline: its edge figures beside the cloud alternative (with the link rate and where it
comes from: the agent's label, its measurement, or the default), the cost of each per month,
and the verdict with its reason. Exit 2 when the API refuses the request (the reason is
printed).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.models import DEFAULT_API, api_headers, refused


def placement(
    hours: Annotated[float, typer.Option(min=0.01, help="Hours of summaries to measure.")] = 24,
    price_per_gb: Annotated[float, typer.Option(min=0, help="Per GB moved up.")] = 0.09,
    cloud_cpu_hour: Annotated[float, typer.Option(min=0, help="Per cloud CPU-hour.")] = 0.05,
    edge_cpu_hour: Annotated[float, typer.Option(min=0, help="Per gateway CPU-hour.")] = 0.0,
    link_mbps: Annotated[
        float | None, typer.Option(min=0.001, help="Link rate when no label, none measured.")
    ] = None,
    latency_budget_ms: Annotated[
        float, typer.Option(min=0.001, help="How fast local actions need an answer.")
    ] = 100.0,
    api: Annotated[str, typer.Option(envvar="AIOT_API_URL", help="Cloud API base URL.")] = (
        DEFAULT_API
    ),
    api_key: Annotated[
        str | None, typer.Option(envvar="AIOT_API_KEY", help="Sent as a Bearer token.")
    ] = None,
) -> None:
    """Where each pipeline's model should run: edge or cloud, measured, with the reason."""
    import httpx
    from rich.console import Console

    params: dict[str, Any] = {
        "hours": hours, "price_per_gb": price_per_gb, "cloud_cpu_hour": cloud_cpu_hour,
        "edge_cpu_hour": edge_cpu_hour, "latency_budget_ms": latency_budget_ms,
        **({"link_mbps": link_mbps} if link_mbps is not None else {}),
    }  # fmt: skip
    try:
        with httpx.Client(base_url=api, timeout=120.0, headers=api_headers(api_key)) as client:
            response = client.get("/api/v1/placement", params=params)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
        raise typer.Exit(1) from None
    refused(response)
    Console().print(report_table(response.json()))


COLUMNS = (
    "agent", "pipeline", "model", "edge p50/p99 ms", "sent/raw B/s", "link Mbit/s",
    "round trip ms", "cloud ms", "edge/month", "cloud/month", "verdict",
)  # fmt: skip


def report_table(report: dict[str, Any]) -> Any:
    """The report as a rich table (one row per agent's pipeline)."""
    from rich.table import Table

    prices = report["prices"]
    table = Table(
        title=f"placement at {prices['per_gb']:g}/GB, {prices['cloud_cpu_hour']:g}/cloud "
        f"CPU-h, {prices['edge_cpu_hour']:g}/edge CPU-h, budget {report['latency_budget_ms']:g} ms"
    )
    for column in COLUMNS:
        table.add_column(column)
    for row in report["pipelines"]:
        cloud = row["cloud_cost_per_month"]
        table.add_row(
            row["agent_id"], row["pipeline"], f"{row['model']} {row['version']}",
            f"{_ms(row['edge_inference_p50_ms'])}/{_ms(row['edge_inference_p99_ms'])}",
            f"{row['sent_bytes_per_s']:.3g}/{row['raw_bytes_per_s']:.3g}", _link(row),
            _ms(row["round_trip_ms"]), _ms(row["cloud_inference_ms"]),
            f"{row['edge_cost_per_month']:.4g}", "-" if cloud is None else f"{cloud:.4g}",
            f"{row['verdict']}: {row['reason']}",
        )  # fmt: skip
    return table


def _link(row: dict[str, Any]) -> str:
    """The link rate and where it comes from: "0.2 configured", "9.6 measured", "-"."""
    rate, source = row["link_mbps"], row.get("link_source")
    return "-" if rate is None else f"{rate:.3g} {source or ''}".rstrip()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
