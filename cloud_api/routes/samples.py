"""``/api/v1/samples``: inputs agents kept, uploaded as a blob and its metadata; listed with
filters and keyset pages; each blob served; the review list of edge/cloud disagreements.

Agents upload with HTTP Basic (their own samples only); operate keys may upload too. Read
keys list and fetch; an agent may read its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cloud_api.callers import Principal
from cloud_api.config import Settings
from cloud_api.cursors import EventPosition, cursor_param, keyset_page
from cloud_api.deps import (
    ArtifactStoreDep,
    ReadDep,
    ReadOrAgentDep,
    SessionDep,
    SettingsDep,
    require,
)
from cloud_api.limits import Limit, body_limit
from cloud_api.params import AgentIdQuery, LabelQuery, NameQuery, SinceQuery, UntilQuery
from cloud_api.params import Limit as PageLimit
from cloud_api.queries.samples import (
    disagreement,
    disagreements_query,
    get_sample,
    labels_of,
    samples_page_query,
)
from cloud_api.registry import CHUNK
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.sample_schemas import (
    LabelSource,
    ReviewPage,
    SampleDisagreement,
    SampleLabelOut,
    SampleOut,
    SamplePage,
)
from cloud_api.samples import blob_key, store_sample
from cloud_api.tables import SampleLabelRow, SampleRow
from shared.errors import ConflictError, ContractError, TooLargeError
from shared.fields import EventId
from shared.samples import CONTENT_TYPES, SampleMeta, SampleReason

router = APIRouter(
    prefix="/api/v1/samples", tags=["samples"], responses=problems(*AUTHENTICATED, 422)
)

FORM_OVERHEAD = 128 * 1024
"""Room in an upload for the metadata field and the form's boundaries around the blob."""

UploaderDep = Annotated[Principal, Depends(require("operate", agents=True))]
AfterDep = Annotated[EventPosition | None, Depends(cursor_param(EventPosition))]

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["meta", "blob"],
                    "properties": {
                        "meta": {"type": "string", "description": "SampleMeta as JSON"},
                        "blob": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


def upload_limit(settings: Settings) -> Limit:
    """The largest upload body: the largest blob and its form."""
    return Limit(
        settings.max_sample_bytes + FORM_OVERHEAD,
        f"a sample's limit of {settings.max_sample_bytes} bytes plus {FORM_OVERHEAD} for the form",
    )


def parse_meta(text: str) -> SampleMeta:
    """The metadata field; a 422 naming the first problem."""
    try:
        return SampleMeta.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "meta"
        raise HTTPException(422, f"sample metadata: {where}: {error['msg']}") from None


@router.post(
    "",
    status_code=201,
    response_model=SampleOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"model": SampleOut, "description": "stored before"},
        **problems(400, 409, 413),
    },
    dependencies=[Depends(body_limit(upload_limit))],
)
async def upload_sample(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactStoreDep,
    principal: UploaderDep,
) -> SampleOut:
    """Store one sample (201), or answer 200 with the stored one when this id came with the
    same bytes before; 409 for the same id with other bytes; 4xx naming any other problem."""
    async with request.form(max_files=1, max_fields=2) as form:
        blob, meta_text = form.get("blob"), form.get("meta")
        if not isinstance(blob, UploadFile) or not isinstance(meta_text, str):
            raise HTTPException(422, "multipart form needs a 'meta' field (JSON) and a 'blob'")
        meta = parse_meta(meta_text)
        principal.check_agent(meta.agent_id)
        try:
            stored = await run_in_threadpool(
                store_sample,
                session,
                store=store,
                meta=meta,
                source=blob.file,
                tmp_dir=settings.data_dir / "uploads",
                max_bytes=settings.max_sample_bytes,
            )
        except TooLargeError as exc:
            raise HTTPException(413, f"sample blob: {exc}") from None
        except ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        except ContractError as exc:
            raise HTTPException(422, str(exc)) from None
    if not stored.created:
        response.status_code = 200
    return sample_out(stored.row, labels_of(session, [stored.row.id])[stored.row.id])


@router.get("", response_model=SamplePage, responses=problems(400))
def list_samples(
    session: SessionDep,
    principal: ReadOrAgentDep,
    after: AfterDep,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    reason: Annotated[SampleReason | None, Query(description="why the edge kept it")] = None,
    label: LabelQuery = None,
    source: Annotated[LabelSource | None, Query(description="who gave `label`")] = None,
    event_id: Annotated[EventId | None, Query(description="samples behind this event")] = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: PageLimit = 100,
) -> SamplePage:
    """Samples newest first (by ``ts``, then id); follow ``next_cursor`` until it is null.

    ``label`` and ``source`` match any label of a sample (together: one label from that
    source). An agent may list its own samples only: it must pass its own ``agent_id``.
    """
    principal.check_agent(agent_id)
    query = samples_page_query(
        agent_id=agent_id,
        pipeline=pipeline,
        reason=reason,
        label=label,
        source=source,
        event_id=event_id,
        since=since,
        until=until,
        after=(after.ts, after.id) if after is not None else None,
        limit=limit + 1,
    )
    rows = session.scalars(query).all()
    page, next_cursor = keyset_page(rows, limit, lambda row: EventPosition(ts=row.ts, id=row.id))
    return SamplePage(items=samples_out(session, page), next_cursor=next_cursor)


@router.get("/review", response_model=ReviewPage, responses=problems(400))
def review_list(
    session: SessionDep,
    _: ReadDep,
    after: AfterDep,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    limit: PageLimit = 100,
) -> ReviewPage:
    """Samples whose edge and cloud labels differ, newest first (by ``ts``, then id): what a
    person should review. Follow ``next_cursor`` until it is null, with the same filters."""
    query = disagreements_query(
        agent_id=agent_id,
        pipeline=pipeline,
        after=(after.ts, after.id) if after is not None else None,
        limit=limit + 1,
    )
    rows = session.scalars(query).all()
    page, next_cursor = keyset_page(rows, limit, lambda row: EventPosition(ts=row.ts, id=row.id))
    labels = labels_of(session, [row.id for row in page])
    items = []
    for row in page:
        pair = disagreement(labels.get(row.id, []))
        if pair is not None:  # a label deleted since the query: nothing to review any more
            sample = sample_out(row, labels.get(row.id, []))
            items.append(SampleDisagreement(sample=sample, edge_label=pair[0], cloud_label=pair[1]))
    return ReviewPage(items=items, next_cursor=next_cursor)


@router.get(
    "/{sample_id}/blob",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-npy": {}, "image/jpeg": {}}},
        **problems(404),
    },
)
def download_blob(
    sample_id: EventId, session: SessionDep, store: ArtifactStoreDep, principal: ReadOrAgentDep
) -> StreamingResponse:
    """The sample's blob as uploaded: a ``.npy`` window or a JPEG."""
    row = get_sample(session, sample_id)
    if row is None:
        raise HTTPException(404, f"no sample {sample_id}")
    principal.check_agent(row.agent_id)
    try:
        file = store.open(blob_key(row.agent_id, row.id))
    except OSError:  # retention took it between the lookup and here, or the store lost it
        raise HTTPException(404, f"sample {sample_id}'s blob is gone") from None

    def chunks() -> Iterator[bytes]:
        with file:
            while chunk := file.read(CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type=CONTENT_TYPES[str(row.meta["kind"])],
        headers={"ETag": f'"{row.sha256}"', "Content-Length": str(row.meta["size"])},
    )


def sample_out(row: SampleRow, labels: Sequence[SampleLabelRow]) -> SampleOut:
    """The REST shape of a stored sample."""
    return SampleOut(
        id=row.id,
        agent_id=row.agent_id,
        pipeline=row.pipeline,
        ts=row.ts,
        reason=row.reason,
        event_id=row.event_id,
        received_at=row.received_at,
        meta=row.meta,
        labels=[SampleLabelOut.model_validate(label) for label in labels],
        blob_url=f"/api/v1/samples/{row.id}/blob",
    )


def samples_out(session: SessionDep, rows: Sequence[SampleRow]) -> list[SampleOut]:
    """The REST shapes of stored samples, their labels read in one query."""
    labels = labels_of(session, [row.id for row in rows])
    return [sample_out(row, labels.get(row.id, [])) for row in rows]
