"""``/api/v1/models``: register model versions, list them, get a signed manifest, download.

Uploads need an ``operate`` key; agents (HTTP Basic) may read manifests and download.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cloud_api import crud, registry
from cloud_api.deps import (
    ArtifactStoreDep,
    ReadDep,
    ReadOrAgentDep,
    SessionDep,
    SettingsDep,
    SigningKeyDep,
    require,
)
from cloud_api.schemas import ModelOut, ModelVersionBrief, ModelVersionRecord
from cloud_api.tables import ModelVersionRow
from shared.errors import AiotError, ConflictError, ContractError, ModelError, TooLargeError

router = APIRouter(prefix="/api/v1/models", tags=["models"])

FORM_OVERHEAD = 64 * 1024
"""Room in a request for the form's other fields and boundaries around the file."""

# The most specific class first: TooLargeError is a ContractError.
_STATUS: list[tuple[type[AiotError], int]] = [
    (TooLargeError, 413),
    (ConflictError, 409),
    (ModelError, 422),
    (ContractError, 422),
]

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["version", "file"],
                    "properties": {
                        "version": {"type": "string"},
                        "file": {"type": "string", "format": "binary"},
                        "task": {"type": "string"},
                        "labels": {"type": "string", "description": "comma-separated"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=ModelVersionRecord,
    openapi_extra=_UPLOAD_BODY,
    responses={409: {}, 413: {}, 422: {}},
    dependencies=[Depends(require("operate"))],
)
async def upload_version(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactStoreDep,
    signing_key: SigningKeyDep,
) -> ModelVersionRecord:
    """Register an ONNX file as ``name`` at form field ``version``; 4xx with the reason."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > settings.max_model_bytes + FORM_OVERHEAD:
        # Refused before a byte of the body is read.
        raise HTTPException(
            413, f"model is larger than the limit of {settings.max_model_bytes} bytes"
        )
    async with request.form(max_files=1, max_fields=8) as form:
        upload, version = form.get("file"), form.get("version")
        if not isinstance(upload, UploadFile) or not isinstance(version, str):
            raise HTTPException(422, "multipart form needs a 'version' field and a 'file'")
        task, labels = form.get("task", ""), form.get("labels", "")
        if not isinstance(task, str) or not isinstance(labels, str):
            raise HTTPException(422, "'task' and 'labels' must be text fields")
        try:
            row = await run_in_threadpool(
                registry.register_model,
                session,
                store=store,
                signing_key=signing_key,
                name=name,
                version=version,
                source=upload.file,
                tmp_dir=settings.data_dir / "uploads",
                max_bytes=settings.max_model_bytes,
                task=task,
                labels=[label.strip() for label in labels.split(",") if label.strip()],
            )
        except AiotError as exc:
            status = next((code for kind, code in _STATUS if isinstance(exc, kind)), None)
            if status is None:
                raise
            raise HTTPException(status, str(exc)) from None
    return ModelVersionRecord.model_validate(row)


@router.get("", response_model=list[ModelOut])
def list_models(session: SessionDep, _: ReadDep) -> list[ModelOut]:
    """Every model name with its versions, oldest first."""
    rows = crud.list_model_versions(session)
    return [
        ModelOut(name=name, versions=[ModelVersionBrief.model_validate(row) for row in group])
        for name, group in groupby(rows, key=lambda row: row.name)
    ]


@router.get("/{name}/versions/{version}", response_model=ModelVersionRecord)
def get_version(
    name: str, version: str, session: SessionDep, _: ReadOrAgentDep
) -> ModelVersionRecord:
    """One version with its signed manifest; 404 if it was never registered."""
    return ModelVersionRecord.model_validate(_row(session, name, version))


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(
    name: str, version: str, session: SessionDep, store: ArtifactStoreDep, _: ReadOrAgentDep
) -> StreamingResponse:
    """The ONNX file, streamed; check it against the signed manifest's sha256."""
    row = _row(session, name, version)
    file = store.open(registry.artifact_key(row.name, row.version))

    def chunks() -> Iterator[bytes]:
        with file:
            while chunk := file.read(registry.CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.size),
            "Content-Disposition": f'attachment; filename="{row.name}-{row.version}.onnx"',
            "ETag": f'"{row.sha256}"',
        },
    )


def _row(session: SessionDep, name: str, version: str) -> ModelVersionRow:
    row = crud.get_model_version(session, name=name, version=version)
    if row is None:
        raise HTTPException(404, f"model {name!r} has no version {version!r}")
    return row
