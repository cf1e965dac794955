"""``/api/v1/placement``: where each pipeline's model should run, with measured numbers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cloud_api.analytics.cloud_times import CloudTimes
from cloud_api.analytics.placement import Placement, Prices, fleet_figures, place, window
from cloud_api.deps import SessionDep, require
from cloud_api.queries.models import get_model_version
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import PipelinePlacement, PlacementPrices, PlacementReport
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/placement",
    tags=["placement"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED, 422),
)

Price = Annotated[float, Query(ge=0, le=1e6)]


@router.get("", response_model=PlacementReport)
def placement(
    request: Request,
    session: SessionDep,
    hours: Annotated[float, Query(gt=0, le=24 * 90, description="of summaries to measure")] = 24,
    price_per_gb: Price = 0.09,
    cloud_cpu_hour: Price = 0.05,
    edge_cpu_hour: Price = 0.0,
    link_mbps: Annotated[
        float | None,
        Query(gt=0, le=1e6, description="link rate of agents with no label, none measured"),
    ] = None,
    latency_budget_ms: Annotated[
        float, Query(gt=0, le=3.6e6, description="how fast local actions need an answer")
    ] = 100.0,
) -> PlacementReport:
    """For each agent's pipeline with summaries in the last ``hours``: its measured edge
    figures beside the cloud alternative, each side's cost per month at the given prices,
    and a verdict with its reason."""
    times: CloudTimes = request.app.state.cloud_times

    def cloud_ms(model: str, version: str) -> float | None:
        row = get_model_version(session, name=model, version=version)
        if row is None:
            return None  # a model the registry never had (configured on the agent)
        return times.of(name=model, version=version, sha256=row.sha256)

    since, until = window(hours, utcnow())
    figures = fleet_figures(
        session, since=since, until=until, default_link_mbps=link_mbps, cloud_ms=cloud_ms
    )
    prices = Prices(price_per_gb, cloud_cpu_hour, edge_cpu_hour)
    rows = [place(f, prices, latency_budget_ms) for f in figures]
    return PlacementReport(
        since=since,
        until=until,
        prices=PlacementPrices(
            per_gb=price_per_gb, cloud_cpu_hour=cloud_cpu_hour, edge_cpu_hour=edge_cpu_hour
        ),
        latency_budget_ms=latency_budget_ms,
        pipelines=[_out(p) for p in rows],
    )


def _out(p: Placement) -> PipelinePlacement:
    f = p.figures
    return PipelinePlacement(
        agent_id=f.agent_id,
        pipeline=f.pipeline,
        model=f.model,
        version=f.version,
        windows_per_s=f.windows_per_s,
        raw_bytes_per_s=f.raw_bps,
        sent_bytes_per_s=f.sent_bps,
        edge_inference_p50_ms=f.edge_p50_ms,
        edge_inference_p99_ms=f.edge_p99_ms,
        round_trip_ms=f.rtt_ms,
        link_mbps=f.link_mbps,
        link_source=f.link_source,
        cloud_inference_ms=f.cloud_ms,
        edge_cost_per_month=p.edge_per_month,
        cloud_cost_per_month=p.cloud_per_month,
        verdict=p.verdict,
        reason=p.reason,
    )
