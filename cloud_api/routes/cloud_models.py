"""``/api/v1/cloud-models``: which registered model version answers each pipeline's
escalations (the escalation runner reads it for every batch)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy.orm import Session

from cloud_api.deps import OperateDep, ReadDep, SessionDep
from cloud_api.escalation.detector import detector_output
from cloud_api.escalation_schemas import CloudModelIn, CloudModelOut
from cloud_api.queries.escalations import get_cloud_model, list_cloud_models, set_cloud_model
from cloud_api.queries.models import get_model_version
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.tables import CloudModelRow, ModelVersionRow
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/cloud-models", tags=["cloud models"], responses=problems(*AUTHENTICATED, 422)
)
PipelinePath = Annotated[
    str,
    Path(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="as agents name it"
    ),
]


def _out(session: Session, row: CloudModelRow) -> CloudModelOut:
    version = get_model_version(session, name=row.model, version=row.version)
    return CloudModelOut(
        pipeline=row.pipeline,
        model=row.model,
        version=row.version,
        normal_label=row.normal_label,
        task=version.task if version is not None else "",
        labels=list(version.labels) if version is not None else [],
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _cannot_answer(version: ModelVersionRow, normal_label: str | None) -> str | None:
    """Why the runner cannot read this version's answers: it runs classifiers (one input, a
    first output of one probability per registry label) and YOLOv8-layout detectors."""
    if not version.labels:
        return "it has no labels"
    if len(version.inputs) != 1:
        return f"it takes {len(version.inputs)} inputs, the runner gives one"
    shape = version.outputs[0]["shape"] if version.outputs else []
    if detector_output(version.labels, shape):
        return None if normal_label is None else "a detector has no normal label"
    if len(shape) != 2 or shape[1] != len(version.labels):
        return (
            f"its output {shape} is neither one probability per label ({len(version.labels)}) "
            f"nor a detection head [batch, 4 + {len(version.labels)}, anchors]"
        )
    return None


@router.put("/{pipeline}", response_model=CloudModelOut, responses=problems(400, 404))
def put_cloud_model(
    pipeline: PipelinePath, body: CloudModelIn, session: SessionDep, principal: OperateDep
) -> CloudModelOut:
    """Make a registered version the pipeline's cloud model; 404 for an unknown version,
    422 for a normal label the version does not have (a detector has none), a version
    without labels, or one the runner cannot read (neither classifier nor detector)."""
    version = get_model_version(session, name=body.model, version=body.version)
    if version is None:
        raise HTTPException(404, f"model {body.model!r} has no version {body.version!r}")
    if (problem := _cannot_answer(version, body.normal_label)) is not None:
        raise HTTPException(
            422, f"model {body.model} {body.version} cannot answer escalations: {problem}"
        )
    if body.normal_label is not None and body.normal_label not in version.labels:
        raise HTTPException(
            422, f"normal_label {body.normal_label!r} is not one of {list(version.labels)}"
        )
    row = CloudModelRow(
        pipeline=pipeline,
        model=body.model,
        version=body.version,
        normal_label=body.normal_label,
        updated_at=utcnow(),
        updated_by=principal.name,
    )
    row = set_cloud_model(session, row)
    session.commit()
    return _out(session, row)


@router.get("", response_model=list[CloudModelOut])
def list_all(session: SessionDep, _: ReadDep) -> list[CloudModelOut]:
    """Every pipeline's cloud model."""
    return [_out(session, row) for row in list_cloud_models(session)]


@router.get("/{pipeline}", response_model=CloudModelOut, responses=problems(404))
def get_one(pipeline: PipelinePath, session: SessionDep, _: ReadDep) -> CloudModelOut:
    """One pipeline's cloud model; 404 when it has none."""
    row = get_cloud_model(session, pipeline)
    if row is None:
        raise HTTPException(404, f"pipeline {pipeline!r} has no cloud model")
    return _out(session, row)
