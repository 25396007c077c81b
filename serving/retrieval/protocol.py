"""Request and response bodies of the collections, retrieve and tune endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from retrieval import (
    Bm25Settings,
    ChunkingSettings,
    CollectionInfo,
    EmbeddingPrecision,
    FusionName,
    GroupBy,
    Hit,
    IngestReport,
    PayloadIndexType,
    SearchOverrides,
    SearchQuery,
    SearchSettings,
    TuneOptions,
    parse_filter,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
META_KEY_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
"""A metadata key the engine can index: dot-separated segments of letters, digits, ``_`` and ``-``."""
MetaKey = Annotated[str, StringConstraints(pattern=META_KEY_PATTERN, max_length=128)]


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    embedding_model: str | None = None
    """Catalog name or local directory; default ``retrieval.embedding_model`` / ``models.embedding_model``."""
    embedding_precision: EmbeddingPrecision | None = None
    """``float32`` or ``int8`` (faster on CPU); default ``retrieval.embedding_precision``."""
    chunking: ChunkingSettings | None = None
    bm25: Bm25Settings | None = None
    payload_indexes: dict[MetaKey, PayloadIndexType] = Field(default_factory=dict)
    """Metadata keys the engine indexes (``keyword``, ``integer``, ``float``, ``bool``): any key can be filtered,
    an indexed one fast."""


class CollectionPublic(BaseModel):
    object: Literal["collection"] = "collection"
    name: str
    embedding_model: str
    dimension: int
    embedding_precision: EmbeddingPrecision
    chunking: ChunkingSettings
    bm25: Bm25Settings
    payload_indexes: dict[str, PayloadIndexType]
    search: SearchOverrides
    """Search settings learned by ``collections tune`` (used when a request does not set them)."""
    tuning: dict[str, Any] | None
    """The last tuning report (without its grid)."""
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
            payload_indexes=spec.payload_indexes,
            search=spec.search,
            tuning=spec.tuning,
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
    group_by: GroupBy | None = None
    """``document`` (default): one hit per document; ``section``: each matching section of long documents."""
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
            group_by=self.group_by,
            rerank=self.rerank,
            rerank_depth=self.rerank_depth,
            rerank_weight=self.rerank_weight,
            filter=parse_filter(self.filter),
        )


class RetrievedChunk(BaseModel):
    object: Literal["retrieval.chunk"] = "retrieval.chunk"
    chunk_id: str
    document_id: str
    section_id: str
    """The retrieval unit that matched (a whole document up to ``chunking.section_tokens``)."""
    index: int
    text: str
    """The section's best-matching chunk: what a citation shows (``start``/``end`` are its offsets)."""
    start: int
    end: int
    score: float
    scores: dict[str, float]
    """Score of each stage: ``dense`` (cosine of the best chunk), ``bm25`` (of the section), ``fused``,
    ``rerank``."""
    metadata: dict[str, Any]

    @classmethod
    def of(cls, hit: Hit) -> RetrievedChunk:
        c = hit.chunk
        return cls(
            chunk_id=c.id,
            document_id=c.document_id,
            section_id=hit.section_id,
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
    group_by: GroupBy
    """``document``: at most one hit per document."""
    data: list[RetrievedChunk]


class TuneRequest(BaseModel):
    """Judged queries to tune a collection on (BEIR's shapes as JSON)."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, str] = Field(min_length=1)
    """Query id → text."""
    qrels: dict[str, dict[str, int]] = Field(min_length=1)
    """Query id → {document id: relevance grade}; grades ≤ 0 count as not relevant."""
    options: TuneOptions = Field(default_factory=TuneOptions)
