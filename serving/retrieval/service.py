"""Async facade over :class:`retrieval.service.RetrievalService` for the gateway.

Blocking work (parsing, encoding, index rebuilds) runs in worker threads; writes to one collection are
serialised; retrieval's domain errors become the gateway's (rendered as OpenAI errors by ``serving.errors``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from retrieval import errors as rerr
from retrieval.filters import parse_filter
from retrieval.loaders import content_id, load_bytes
from retrieval.rag import conversation_query, ground, grounded_messages
from retrieval.search import SearchQuery
from retrieval.service import RetrievalService
from retrieval.types import Document
from serving.errors import (
    BadRequestError,
    ConflictError,
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
)
from serving.retrieval.protocol import (
    CollectionCreate,
    CollectionPublic,
    DocumentsDeleted,
    DocumentsIngest,
    IngestResult,
    RetrievedChunk,
    RetrieveRequest,
    RetrieveResponse,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class UnsupportedMediaError(GatewayError):
    status_code = 415
    type = "invalid_request_error"


class UnprocessableError(GatewayError):
    status_code = 422
    type = "invalid_request_error"


@contextmanager
def domain_errors() -> Iterator[None]:
    """Translate retrieval's exceptions into the gateway's."""
    try:
        yield
    except rerr.CollectionNotFoundError as exc:
        raise NotFoundError(
            exc.message, param=exc.param or "collection", code="collection_not_found"
        ) from exc
    except rerr.CollectionExistsError as exc:
        raise ConflictError(exc.message, param=exc.param, code="collection_exists") from exc
    except rerr.UnsupportedFormatError as exc:
        raise UnsupportedMediaError(exc.message, param=exc.param, code="unsupported_file_type") from exc
    except rerr.InvalidFilterError as exc:
        raise UnprocessableError(exc.message, param=exc.param or "filter", code="invalid_filter") from exc
    except rerr.InvalidDocumentError as exc:
        raise BadRequestError(exc.message, param=exc.param, code="invalid_document") from exc
    except rerr.RetrievalError as exc:
        raise BadRequestError(exc.message, param=exc.param, code="invalid_request") from exc


class RetrievalGateway:
    """What the routes call; one per app, built in the router module's lifespan."""

    def __init__(self, service: RetrievalService) -> None:
        self.service = service
        self._locks: dict[str, asyncio.Lock] = {}

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with domain_errors():
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def create(self, body: CollectionCreate) -> CollectionPublic:
        async with self._lock(body.name):
            await self._run(
                self.service.create_collection,
                body.name,
                embedding_model=body.embedding_model,
                embedding_precision=body.embedding_precision,
                chunking=body.chunking,
                bm25=body.bm25,
            )
            return CollectionPublic.of(await self._run(self.service.describe, body.name))

    async def list_all(self) -> list[CollectionPublic]:
        return [CollectionPublic.of(i) for i in await self._run(self.service.list_collections)]

    async def describe(self, name: str) -> CollectionPublic:
        return CollectionPublic.of(await self._run(self.service.describe, name))

    async def delete(self, name: str) -> None:
        async with self._lock(name):
            await self._run(self.service.delete_collection, name)

    async def ingest_json(self, name: str, body: DocumentsIngest) -> IngestResult:
        docs = [
            Document(id=d.id or content_id(d.text), text=d.text, metadata=d.metadata) for d in body.documents
        ]
        return await self._ingest(name, docs)

    async def ingest_files(
        self, name: str, files: list[tuple[str, bytes]], metadata: dict[str, Any]
    ) -> IngestResult:
        limit = self.service.settings.max_upload_bytes
        docs: list[Document] = []
        for filename, data in files:
            if len(data) > limit:
                raise PayloadTooLargeError(
                    f"{filename}: {len(data)} bytes exceeds retrieval.max_upload_bytes ({limit})",
                    param="file",
                )
            with domain_errors():
                parsed = await asyncio.to_thread(load_bytes, data, filename)
            docs.extend(Document(d.id, d.text, {**d.metadata, **metadata}) for d in parsed)
        return await self._ingest(name, docs)

    async def _ingest(self, name: str, docs: list[Document]) -> IngestResult:
        async with self._lock(name):
            await self._run(self.service.store.spec, name)
            report = await self._run(self.service.ingest, name, docs)
        return IngestResult.of(name, report)

    async def delete_document(self, name: str, document_id: str) -> DocumentsDeleted:
        async with self._lock(name):
            removed = await self._run(self.service.delete_documents, name, [document_id])
        if removed == 0:
            raise NotFoundError(
                f"document {document_id!r} is not in collection {name!r}",
                param="document_id",
                code="document_not_found",
            )
        return DocumentsDeleted(collection=name, document_ids=[document_id], chunks_removed=removed)

    async def retrieve(self, body: RetrieveRequest) -> RetrieveResponse:
        with domain_errors():
            query = body.to_search_query(self.service.settings.search)
        hits = await self._run(self.service.search, query)
        return RetrieveResponse(
            collection=body.collection, mode=query.mode, data=[RetrievedChunk.of(h) for h in hits]
        )


class RetrievalAugmenter:
    """Implements ``serving.chat.rag.RagAugmenter``: grounds a chat request in a collection."""

    def __init__(self, gateway: RetrievalGateway) -> None:
        self.gateway = gateway

    async def augment(
        self, messages: list[dict[str, Any]], options: dict[str, Any], model: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        service = self.gateway.service
        rag = service.settings.rag
        history = options.get("history_turns", rag.history_turns)
        if not isinstance(history, int) or history < 0:
            raise BadRequestError(
                "rag.history_turns must be a non-negative integer", param="rag.history_turns"
            )
        text = conversation_query(messages, history)
        if not text.strip():
            raise BadRequestError("rag needs a user message to retrieve for", param="messages")
        mode = options.get("mode")
        min_score = options.get("min_score")
        if min_score is not None and not isinstance(min_score, int | float):
            raise BadRequestError("rag.min_score must be a number", param="rag.min_score")
        with domain_errors():
            query = SearchQuery.from_settings(
                service.settings.search,
                str(options["collection"]),
                text,
                mode="bm25" if mode == "sparse" else mode,
                top_k=options.get("top_k") or rag.top_k,
                rerank=options.get("rerank"),
                filter=parse_filter(options.get("filter")),
            )
        grounding = await self.gateway._run(ground, service, messages, query, rag, min_score)
        logger.info(
            "rag grounded",
            extra={"collection": query.collection, "model": model, "passages": len(grounding.hits)},
        )
        return grounded_messages(messages, grounding), grounding.citations()
