"""``/api/v1/stats``: what the edge saved, from the summaries pipelines send."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime

from cloud_api import crud
from cloud_api.deps import SessionDep, require
from cloud_api.schemas import BandwidthReport

router = APIRouter(prefix="/api/v1/stats", tags=["stats"], dependencies=[Depends(require("read"))])


@router.get("/bandwidth", response_model=BandwidthReport)
def bandwidth(
    session: SessionDep,
    since: Annotated[AwareDatetime | None, Query(description="inclusive, on window start")] = None,
    until: Annotated[AwareDatetime | None, Query(description="exclusive, on window start")] = None,
    agent_id: str | None = None,
    pipeline: str | None = None,
) -> BandwidthReport:
    """Raw bytes read at the edge against bytes sent to the cloud, per agent and pipeline,
    with the fleet total; all time unless ``since``/``until`` narrow it."""
    if since is not None and until is not None and until <= since:
        raise HTTPException(status_code=422, detail="until must be after since")
    return crud.bandwidth_report(
        session, since=since, until=until, agent_id=agent_id, pipeline=pipeline
    )
