"""``/api/v1/models``: register model versions, list them, get a signed manifest, download.

Uploads need an ``operate`` key; agents (HTTP Basic) may read manifests and download.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cloud_api import registry
from cloud_api.config import Settings
from cloud_api.deps import (
    ArtifactStoreDep,
    ReadDep,
    ReadOrAgentDep,
    SessionDep,
    SettingsDep,
    SigningKeyDep,
    require,
)
from cloud_api.limits import Limit, body_limit
from cloud_api.params import ModelNamePath
from cloud_api.queries.models import get_model_version, list_model_versions
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import ModelOut, ModelVersionBrief, ModelVersionRecord
from cloud_api.tables import ModelVersionRow
from shared.errors import AiotError, ConflictError, ContractError, ModelError, TooLargeError

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], responses=problems(*AUTHENTICATED, 422)
)

FORM_OVERHEAD = 64 * 1024
"""Room in a request for the form's other fields and boundaries around the file."""


def upload_limit(settings: Settings) -> Limit:
    """The largest upload body: the largest model and its form."""
    return Limit(
        settings.max_model_bytes + FORM_OVERHEAD,
        f"a model's limit of {settings.max_model_bytes} bytes plus {FORM_OVERHEAD} for the form",
    )


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
    responses=problems(409, 413),
    dependencies=[Depends(require("operate")), Depends(body_limit(upload_limit))],
)
async def upload_version(
    name: ModelNamePath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactStoreDep,
    signing_key: SigningKeyDep,
) -> ModelVersionRecord:
    """Register an ONNX file as ``name`` at form field ``version``; 4xx with the reason.

    The body is bounded as it streams in (``cloud_api/limits.py``): a Content-Length over the
    limit is refused before a byte is read, a chunked body as soon as it passes the limit.
    """
    try:
        registry.check_name(name, what="model name")  # before a body is read for nothing
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None
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
    rows = list_model_versions(session)
    return [
        ModelOut(name=name, versions=[ModelVersionBrief.model_validate(row) for row in group])
        for name, group in groupby(rows, key=lambda row: row.name)
    ]


@router.get(
    "/{name}/versions/{version}", response_model=ModelVersionRecord, responses=problems(404)
)
def get_version(
    name: ModelNamePath, version: ModelNamePath, session: SessionDep, _: ReadOrAgentDep
) -> ModelVersionRecord:
    """One version with its signed manifest; 404 if it was never registered."""
    return ModelVersionRecord.model_validate(_row(session, name, version))


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the part a `Range: bytes=...` header asked for"},
        416: {"description": "the range is malformed or outside the artifact"},
        **problems(404),
    },
)
def download_artifact(
    name: ModelNamePath,
    version: ModelNamePath,
    session: SessionDep,
    store: ArtifactStoreDep,
    _: ReadOrAgentDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The ONNX file, streamed; check it against the signed manifest's sha256.

    One range (``bytes=N-``, ``bytes=N-M``, ``bytes=-S``) is answered 206 with
    ``Content-Range``, so an agent resumes a broken download; a range that is malformed or
    starts past the end is 416. Several ranges, or an ``If-Range`` that is not the ETag, get
    the whole file (RFC 9110 lets a server ignore a range).
    """
    row = _row(session, name, version)
    etag = f'"{row.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{row.name}-{row.version}.onnx"',
        "ETag": etag,
    }
    span = None
    if range_header is not None and (if_range is None or if_range == etag):
        try:
            span = parse_range(range_header, row.size)
        except ValueError as exc:
            unsatisfiable = {"Accept-Ranges": "bytes", "Content-Range": f"bytes */{row.size}"}
            raise HTTPException(416, str(exc), headers=unsatisfiable) from None
    first, last = span if span is not None else (0, row.size - 1)
    file = store.open(registry.artifact_key(row.name, row.version))
    file.seek(first)

    def chunks() -> Iterator[bytes]:
        left = last - first + 1
        with file:
            while left > 0 and (chunk := file.read(min(registry.CHUNK, left))):
                left -= len(chunk)
                yield chunk

    headers["Content-Length"] = str(last - first + 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{row.size}"
    return StreamingResponse(
        chunks(),
        status_code=206 if span is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) one ``bytes=`` range asks of ``size`` bytes.

    None for several ranges (answered whole); ValueError naming the problem for a malformed
    range or one that starts past the end.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        raise ValueError(f"range {header!r} is not of the form bytes=N-, bytes=N-M or bytes=-S")
    if "," in spec:
        return None
    start_text, dash, end_text = spec.strip().partition("-")
    if not dash or not (start_text + end_text).isdigit() or not (start_text or end_text):
        raise ValueError(f"range {header!r} is not of the form bytes=N-, bytes=N-M or bytes=-S")
    if not start_text:  # the last S bytes
        suffix = int(end_text)
        if suffix == 0 or size == 0:
            raise ValueError(f"range {header!r} selects no byte of {size}")
        return max(0, size - suffix), size - 1
    first = int(start_text)
    last = int(end_text) if end_text else size - 1
    if first >= size or last < first:
        raise ValueError(f"range {header!r} is outside the artifact's {size} bytes")
    return first, min(last, size - 1)


def _row(session: SessionDep, name: str, version: str) -> ModelVersionRow:
    row = get_model_version(session, name=name, version=version)
    if row is None:
        raise HTTPException(404, f"model {name!r} has no version {version!r}")
    return row
