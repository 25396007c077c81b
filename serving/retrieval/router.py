"""``/v1/collections`` (create, list, describe, delete, tune; documents add/replace/delete) and ``/v1/retrieve``.

Changes need the admin scope; reads need an API key. The module's ``lifespan`` builds the retrieval service and
installs the RAG augmenter on ``app.state``; a store that cannot be opened (the embedded store is held by another
process) stops the gateway from starting.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request, status
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from retrieval import TuneReport
from serving.deps import AdminDep, ApiKeyDep
from serving.errors import BadRequestError, ServiceUnavailableError
from serving.retrieval.protocol import (
    NAME_PATTERN,
    CollectionCreate,
    CollectionDeleted,
    CollectionList,
    CollectionPublic,
    DocumentsDeleted,
    DocumentsIngest,
    IngestResult,
    RetrieveRequest,
    RetrieveResponse,
    TuneRequest,
)
from serving.retrieval.service import RetrievalAugmenter, RetrievalGateway

logger = logging.getLogger(__name__)
router = APIRouter(tags=["retrieval"])
CollectionPath = Annotated[str, Path(pattern=NAME_PATTERN)]


def get_retrieval(request: Request) -> RetrievalGateway:
    gateway: RetrievalGateway | None = getattr(request.app.state, "retrieval", None)
    if gateway is None:
        raise ServiceUnavailableError(
            "retrieval is not available on this gateway (see its log)", code="retrieval_off"
        )
    return gateway


RetrievalDep = Annotated[RetrievalGateway, Depends(get_retrieval)]


@router.post("/v1/collections", status_code=status.HTTP_201_CREATED, response_model=CollectionPublic)
async def create_collection(body: CollectionCreate, _: AdminDep, gw: RetrievalDep) -> CollectionPublic:
    return await gw.create(body)


@router.get("/v1/collections", response_model=CollectionList)
async def list_collections(_: ApiKeyDep, gw: RetrievalDep) -> CollectionList:
    return CollectionList(data=await gw.list_all())


@router.get("/v1/collections/{name}", response_model=CollectionPublic)
async def describe_collection(name: CollectionPath, _: ApiKeyDep, gw: RetrievalDep) -> CollectionPublic:
    return await gw.describe(name)


@router.delete("/v1/collections/{name}", response_model=CollectionDeleted)
async def delete_collection(name: CollectionPath, _: AdminDep, gw: RetrievalDep) -> CollectionDeleted:
    await gw.delete(name)
    return CollectionDeleted(id=name)


@router.post("/v1/collections/{name}/documents", response_model=IngestResult)
async def add_documents(
    name: CollectionPath, request: Request, _: AdminDep, gw: RetrievalDep
) -> IngestResult:
    """JSON ``{"documents": [{"id", "text", "metadata"}]}`` or multipart ``file`` uploads (txt, md, html, pdf,
    jsonl) with an optional ``metadata`` form field holding a JSON object."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        uploads = [v for v in form.getlist("file") + form.getlist("files") if isinstance(v, UploadFile)]
        if not uploads:
            raise BadRequestError("multipart upload without a `file` field", param="file")
        metadata = _form_metadata(form.get("metadata"))
        files = [(u.filename or "upload.txt", await u.read()) for u in uploads]
        return await gw.ingest_files(name, files, metadata)
    try:
        body = DocumentsIngest.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise BadRequestError(
            f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param
        ) from exc
    return await gw.ingest_json(name, body)


def _form_metadata(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise BadRequestError("metadata must be a JSON object", param="metadata") from exc
    if not isinstance(value, dict):
        raise BadRequestError("metadata must be a JSON object", param="metadata")
    return value


@router.delete("/v1/collections/{name}/documents/{document_id}", response_model=DocumentsDeleted)
async def delete_document(
    name: CollectionPath,
    document_id: Annotated[str, Path(min_length=1, max_length=512)],
    _: AdminDep,
    gw: RetrievalDep,
) -> DocumentsDeleted:
    return await gw.delete_document(name, document_id)


@router.post("/v1/collections/{name}/tune", response_model=TuneReport)
async def tune_collection(
    name: CollectionPath, body: TuneRequest, _: AdminDep, gw: RetrievalDep
) -> TuneReport:
    """Learn the collection's search settings from judged queries and store them with it; answers when done
    (seconds without a reranker, minutes with one: the cross-encoder scores every tuning query's candidates)."""
    return await gw.tune(name, body)


@router.post("/v1/retrieve", response_model=RetrieveResponse)
async def retrieve(body: RetrieveRequest, _: ApiKeyDep, gw: RetrievalDep) -> RetrieveResponse:
    return await gw.retrieve(body)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store and install the RAG augmenter.

    Raises:
        StoreBusyError: the embedded store is open in another process (the gateway must not start half-working).
    """
    from ragswap import Settings
    from retrieval import RetrievalService, StoreBusyError

    settings: Settings = app.state.settings
    app.state.retrieval = None
    try:
        service = await asyncio.to_thread(
            RetrievalService, settings.retrieval, settings.models, settings.server.state_dir
        )
    except StoreBusyError as exc:
        logger.error("gateway cannot start: %s", exc.message)
        app.state.startup_error = exc.message
        raise
    gateway = RetrievalGateway(service)
    app.state.retrieval = gateway
    app.state.rag_augmenter = RetrievalAugmenter(gateway)
    try:
        yield
    finally:
        app.state.rag_augmenter = None
        app.state.retrieval = None
        await asyncio.to_thread(service.close)
