"""``/healthz`` and ``/metrics``: for load balancers and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from cloud_api.deps import SessionDep
from cloud_api.queries.health import database_ok
from cloud_api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(request: Request, session: SessionDep) -> JSONResponse:
    """200 when the database answers and ingest (if enabled) is connected, else 503."""
    database = database_ok(session)
    worker = request.app.state.ingest
    ingest = "disabled" if worker is None else "connected" if worker.connected else "disconnected"
    healthy = database and ingest != "disconnected"
    body = Health(status="ok" if healthy else "degraded", database=database, ingest=ingest)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's metrics (of every worker's, with several)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
