"""Request and response bodies of the collections and retrieve endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval.filters import parse_filter
from retrieval.search import SearchQuery
from retrieval.service import CollectionInfo
from retrieval.settings import (
    Bm25Settings,
    ChunkingSettings,
    EmbeddingPrecision,
    FusionName,
    SearchSettings,
)
from retrieval.types import Hit, IngestReport

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    embedding_model: str | None = None
    """Catalog name or local directory; default ``retrieval.embedding_model`` / ``models.embedding_model``."""
    embedding_precision: EmbeddingPrecision | None = None
    """``float32`` or ``int8`` (faster on CPU); default ``retrieval.embedding_precision``."""
    chunking: ChunkingSettings | None = None
    bm25: Bm25Settings | None = None


class CollectionPublic(BaseModel):
    object: Literal["collection"] = "collection"
    name: str
    embedding_model: str
    dimension: int
    embedding_precision: EmbeddingPrecision
    chunking: ChunkingSettings
    bm25: Bm25Settings
    documents: int
    chunks: int
    created_at: int

    @classmethod
    def of(cls, info: CollectionInfo) -> CollectionPublic:
        spec = info.spec
        return cls(
            name=spec.name,
            embedding_model=spec.embedding_model,
            dimension=spec.dimension,
            embedding_precision=spec.embedding_precision,
            chunking=spec.chunking,
            bm25=spec.bm25,
            documents=info.documents,
            chunks=info.chunks,
            created_at=int(spec.created_at),
        )


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionPublic]


class CollectionDeleted(BaseModel):
    id: str
    object: Literal["collection"] = "collection"
    deleted: bool = True


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=512)
    """Document id; re-sending an id replaces that document. Default: a hash of the text."""
    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Stored with every chunk and usable in ``filter``."""


class DocumentsIngest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=10_000)


class IngestResult(BaseModel):
    object: Literal["ingest.result"] = "ingest.result"
    collection: str
    documents: int
    chunks_added: int
    chunks_unchanged: int
    chunks_removed: int
    seconds: float

    @classmethod
    def of(cls, collection: str, report: IngestReport) -> IngestResult:
        return cls(collection=collection, **report.__dict__)


class DocumentsDeleted(BaseModel):
    object: Literal["documents.deleted"] = "documents.deleted"
    collection: str
    document_ids: list[str]
    chunks_removed: int


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(pattern=NAME_PATTERN)
    query: str = Field(min_length=1, max_length=8192)
    top_k: int | None = Field(default=None, ge=1, le=1000)
    mode: Literal["dense", "bm25", "sparse", "hybrid"] | None = None
    """``sparse`` is a synonym of ``bm25``."""
    fusion: FusionName | None = None
    rrf_k: int | None = Field(default=None, ge=1)
    weight: float | None = Field(default=None, ge=0, le=1)
    candidates: int | None = Field(default=None, ge=1, le=1000)
    rerank: bool | None = None
    rerank_depth: int | None = Field(default=None, ge=1, le=1000)
    rerank_weight: float | None = Field(default=None, ge=0, le=1)
    filter: dict[str, Any] | None = None

    def to_search_query(self, settings: SearchSettings) -> SearchQuery:
        """Raises InvalidFilterError (rendered as 422)."""
        return SearchQuery.from_settings(
            settings,
            self.collection,
            self.query,
            mode="bm25" if self.mode == "sparse" else self.mode,
            fusion=self.fusion,
            top_k=self.top_k,
            candidates=self.candidates,
            rrf_k=self.rrf_k,
            weight=self.weight,
            rerank=self.rerank,
            rerank_depth=self.rerank_depth,
            rerank_weight=self.rerank_weight,
            filter=parse_filter(self.filter),
        )


class RetrievedChunk(BaseModel):
    object: Literal["retrieval.chunk"] = "retrieval.chunk"
    chunk_id: str
    document_id: str
    index: int
    text: str
    start: int
    end: int
    score: float
    scores: dict[str, float]
    """Score of each stage: ``dense`` (cosine), ``bm25``, ``fused``, ``rerank``."""
    metadata: dict[str, Any]

    @classmethod
    def of(cls, hit: Hit) -> RetrievedChunk:
        c = hit.chunk
        return cls(
            chunk_id=c.id,
            document_id=c.document_id,
            index=c.index,
            text=c.text,
            start=c.start,
            end=c.end,
            score=hit.score,
            scores=hit.scores,
            metadata=c.metadata,
        )


class RetrieveResponse(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    mode: str
    data: list[RetrievedChunk]
