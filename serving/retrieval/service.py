"""Async facade over :class:`retrieval.RetrievalService` for the gateway.

Blocking work (parsing, encoding, searching, tuning) runs in worker threads; writes to one collection are
serialised; retrieval's domain errors become the gateway's (rendered as OpenAI errors by ``serving.errors``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import retrieval
from retrieval import (
    Document,
    Grounding,
    RetrievalService,
    SearchQuery,
    TuneReport,
    content_id,
    conversation_query,
    ground,
    grounded_messages,
    load_bytes,
    parse_filter,
    tune_collection,
)
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
    TuneRequest,
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
    except retrieval.CollectionNotFoundError as exc:
        raise NotFoundError(
            exc.message, param=exc.param or "collection", code="collection_not_found"
        ) from exc
    except retrieval.CollectionExistsError as exc:
        raise ConflictError(exc.message, param=exc.param, code="collection_exists") from exc
    except retrieval.UnsupportedFormatError as exc:
        raise UnsupportedMediaError(exc.message, param=exc.param, code="unsupported_file_type") from exc
    except retrieval.InvalidFilterError as exc:
        raise UnprocessableError(exc.message, param=exc.param or "filter", code="invalid_filter") from exc
    except retrieval.InvalidDocumentError as exc:
        raise BadRequestError(exc.message, param=exc.param, code="invalid_document") from exc
    except retrieval.TuneRefusedError as exc:
        raise BadRequestError(exc.message, param=exc.param, code="too_few_judged_queries") from exc
    except retrieval.RetrievalError as exc:
        raise BadRequestError(exc.message, param=exc.param, code="invalid_request") from exc


class RetrievalGateway:
    """What the routes and the RAG augmenter call; one per app, built in the router module's lifespan."""

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
                payload_indexes=body.payload_indexes,
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
            parsed = await self._run(load_bytes, data, filename)
            docs.extend(Document(d.id, d.text, {**d.metadata, **metadata}) for d in parsed)
        return await self._ingest(name, docs)

    async def _ingest(self, name: str, docs: list[Document]) -> IngestResult:
        async with self._lock(name):
            await self._run(self.service.store.spec, name)
            report = await self._run(self.service.ingest, name, docs)
        return IngestResult.of(name, report)

    async def delete_document(self, name: str, document_id: str) -> DocumentsDeleted:
        async with self._lock(name):
            await self._run(self.service.store.spec, name)
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
        spec = await self._run(self.service.store.spec, body.collection)
        resolved = self.service.resolve(query, spec)
        hits = await self._run(self.service.search, query)
        return RetrieveResponse(
            collection=body.collection,
            mode=resolved.mode,
            group_by=resolved.group_by,
            data=[RetrievedChunk.of(h) for h in hits],
        )

    async def tune(self, name: str, body: TuneRequest) -> TuneReport:
        """Tune in a worker thread (minutes with a reranker); writes to the collection wait meanwhile."""
        async with self._lock(name):
            return await self._run(
                tune_collection, self.service, name, body.queries, body.qrels, body.options
            )

    async def ground(
        self, messages: list[dict[str, Any]], query: SearchQuery, min_score: float | None
    ) -> Grounding:
        """Retrieve for a conversation and build its grounded prompt (in a worker thread)."""
        return await self._run(ground, self.service, messages, query, self.service.settings.rag, min_score)


class RetrievalAugmenter:
    """Implements ``serving.chat.rag.RagAugmenter``: grounds a chat request in a collection."""

    def __init__(self, gateway: RetrievalGateway) -> None:
        self.gateway = gateway

    async def augment(
        self, messages: list[dict[str, Any]], options: dict[str, Any], model: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        settings = self.gateway.service.settings
        rag = settings.rag
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
                settings.search,
                str(options["collection"]),
                text,
                mode="bm25" if mode == "sparse" else mode,
                top_k=options.get("top_k") or rag.top_k,
                group_by=rag.group_by,
                rerank=options.get("rerank"),
                filter=parse_filter(options.get("filter")),
            )
        grounding = await self.gateway.ground(messages, query, min_score)
        logger.info(
            "rag grounded",
            extra={"collection": query.collection, "model": model, "passages": len(grounding.hits)},
        )
        return grounded_messages(messages, grounding), grounding.citations()
