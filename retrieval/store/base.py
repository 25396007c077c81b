"""The storage contract both Qdrant backends implement, and what they share: collection specs, the point layout
and the one query model (:class:`StoreQuery`) that the service builds once and either engine runs.

A point is a :class:`~retrieval.types.Section`: a multivector ``dense`` (one unit vector per chunk, compared
with ``MaxSim``, so a section's dense score is its best chunk's cosine similarity), a sparse ``bm25`` vector of
the whole section (Qdrant's BM25 with ``Modifier.Idf``) and the payload of :meth:`Section.payload`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval.errors import InvalidSearchError
from retrieval.filters import MetadataFilter
from retrieval.settings import (
    Bm25Settings,
    ChunkingSettings,
    EmbeddingPrecision,
    FusionName,
    PayloadIndexType,
    RetrievalSettings,
)
from retrieval.sparse import SparseVector
from retrieval.types import Section

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DENSE = "dense"
SPARSE = "bm25"
LAYOUT = 2
"""Version of the point layout (sections with multivector chunks); bumped when a store cannot read older points."""
SYSTEM_INDEXES: dict[str, PayloadIndexType] = {
    "document_id": "keyword",
    "lead": "bool",
    "seq": "integer",
    "n_chunks": "integer",
}
"""Payload indexes every collection has: documents are looked up by id, counted by their lead section, unfinished
writes are hidden by ``seq``, and chunks are counted by facets over ``n_chunks``."""
WRITE_BATCH = 256
"""Points per engine update; a batch always holds whole documents."""


class SearchOverrides(BaseModel):
    """Search settings stored with a collection (by ``collections tune``); ``None`` = the global default."""

    model_config = ConfigDict(extra="forbid")

    fusion: FusionName | None = None
    rrf_k: int | None = Field(default=None, ge=1)
    weight: float | None = Field(default=None, ge=0, le=1)
    candidates: int | None = Field(default=None, ge=1, le=1000)
    rerank_depth: int | None = Field(default=None, ge=1, le=1000)
    rerank_weight: float | None = Field(default=None, ge=0, le=1)


class CollectionSpec(BaseModel):
    """What a collection was created with, and the search settings it learned; stored beside its points."""

    model_config = ConfigDict(extra="forbid")

    name: str
    embedding_model: str
    dimension: int
    embedding_precision: EmbeddingPrecision = "float32"
    """Documents and queries are embedded at the same precision."""
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    bm25: Bm25Settings = Field(default_factory=Bm25Settings)
    payload_indexes: dict[str, PayloadIndexType] = Field(default_factory=dict)
    """Metadata keys the engine indexes for fast filters (any key can be filtered; an index makes it fast)."""
    search: SearchOverrides = Field(default_factory=SearchOverrides)
    tuning: dict[str, Any] | None = None
    """The report of the last ``collections tune`` (what it chose and measured)."""
    created_at: float = Field(default_factory=time.time)
    layout: int = LAYOUT


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidSearchError(
            f"invalid collection name {name!r}: letters, digits, '_' and '-', at most 64", param="name"
        )


@dataclass(frozen=True)
class StoreQuery:
    """One search, independent of the engine: the service builds it once and either backend translates it.

    With both ``dense`` and ``sparse`` it is a hybrid query: two prefetches of ``candidates`` each fused by
    ``fusion`` inside the engine. With one of them it is a plain nearest-neighbour query.
    """

    dense: tuple[float, ...] | None
    sparse: SparseVector | None
    candidates: int
    limit: int
    fusion: Literal["rrf", "dbsf"] = "dbsf"
    rrf_k: int = 60
    weights: tuple[float, float] | None = None
    """RRF weights of the (dense, BM25) lists; ``None`` = equal."""
    filter: MetadataFilter | None = None
    ids_only: bool = False
    """Return only each point's ``document_id`` (no text, no vectors, no per-stage scores): ranking documents
    for evaluation and tuning, where the payload would cost more than the search."""

    @property
    def hybrid(self) -> bool:
        return self.dense is not None and bool(self.sparse)


@dataclass(frozen=True)
class StoredHit:
    """A point the engine returned: its id, score (fused in hybrid queries), payload and chunk vectors."""

    id: str
    score: float
    payload: dict[str, Any]
    vectors: np.ndarray | None = None


@dataclass(frozen=True)
class QueryResult:
    hits: list[StoredHit]
    bm25: dict[str, float] = field(default_factory=dict)
    """BM25 score of the BM25 list's candidates (hybrid and BM25 queries), for per-stage scores."""


@dataclass(frozen=True)
class StoredSection:
    """What the store knows of a stored section when diffing an ingest."""

    id: str
    document_id: str
    chunk_ids: tuple[str, ...]


@dataclass(frozen=True)
class PointData:
    """A section ready to write: its chunks' unit vectors (rows in chunk order) and its BM25 vector."""

    section: Section
    vectors: np.ndarray
    sparse: SparseVector
    version: str


class ChunkStore(Protocol):
    """Where sections, their vectors and payload live. Ids are section ids (UUID strings)."""

    def list_specs(self) -> list[CollectionSpec]: ...

    def spec(self, name: str) -> CollectionSpec:
        """Raises CollectionNotFoundError."""
        ...

    def create(self, spec: CollectionSpec) -> None:
        """Raises CollectionExistsError."""
        ...

    def save_spec(self, spec: CollectionSpec) -> None:
        """Replace the stored spec of an existing collection (tuned settings, measured ``avg_len``)."""
        ...

    def drop(self, name: str) -> None: ...

    def sections_of(self, name: str, document_ids: list[str]) -> dict[str, list[StoredSection]]:
        """The stored sections of each of ``document_ids`` (absent documents map to an empty list)."""
        ...

    def vectors(self, name: str, ids: list[str]) -> dict[str, np.ndarray]:
        """Chunk vectors of stored sections (rows in chunk order)."""
        ...

    def write(self, name: str, add: list[PointData], remove: list[str]) -> None:
        """Add sections and remove section ids. Every engine update holds whole documents, so a crash leaves
        each document either as it was or fully written; removals come after the additions. Only sections the
        collection lacks are added (section ids are content-addressed)."""
        ...

    def query(self, name: str, query: StoreQuery) -> QueryResult: ...

    def scroll_sections(self, name: str) -> Iterator[list[tuple[str, str, str]]]:
        """Batches of (section id, document id, section text) over the whole collection."""
        ...

    def set_sparse(self, name: str, vectors: dict[str, SparseVector]) -> None:
        """Replace the BM25 vectors of stored sections (after BM25 parameters changed)."""
        ...

    def counts(self, name: str) -> tuple[int, int]:
        """(documents, chunks)."""
        ...

    def close(self) -> None: ...


def stored_section(point_id: object, payload: dict[str, Any]) -> StoredSection:
    """A point of a ``sections_of`` scroll (payload ``document_id`` and ``chunks``) as a :class:`StoredSection`."""
    chunk_ids = tuple(str(c[0]) for c in payload.get("chunks") or [])
    return StoredSection(str(point_id), str(payload["document_id"]), chunk_ids)


def stored_hit(point_id: object, score: float, payload: dict[str, Any] | None, vector: object) -> StoredHit:
    """An engine's scored point (either client's) as a :class:`StoredHit`; ``vector`` is its named vectors."""
    raw = vector.get(DENSE) if isinstance(vector, dict) else None
    vectors = np.asarray(raw, dtype=np.float32) if raw is not None else None
    return StoredHit(str(point_id), float(score), dict(payload or {}), vectors)


def document_batches(points: list[PointData], size: int = WRITE_BATCH) -> Iterator[list[PointData]]:
    """``points`` in batches of about ``size`` that never split a document's sections."""
    batch: list[PointData] = []
    for i, point in enumerate(points):
        batch.append(point)
        last_of_doc = i + 1 == len(points) or points[i + 1].section.document_id != point.section.document_id
        if len(batch) >= size and last_of_doc:
            yield batch
            batch = []
    if batch:
        yield batch


def max_sim(vectors: np.ndarray, query: np.ndarray) -> tuple[float, int]:
    """(best cosine similarity, index of the best chunk) of unit ``vectors`` against a unit query."""
    sims = vectors @ query
    best = int(np.argmax(sims))
    return float(sims[best]), best


def facet_sum(hits: list[tuple[Any, int]]) -> int:
    """Σ value × count over facet hits of an integer field (chunks from the ``n_chunks`` facet)."""
    return int(sum(int(value) * int(count) for value, count in hits))


def open_store(settings: RetrievalSettings, state_dir: Path) -> ChunkStore:
    """The embedded store (see :meth:`RetrievalSettings.storage_path`) or, with ``settings.url``, a Qdrant
    server/cluster.

    Raises:
        StoreBusyError: another process holds the embedded store open.
    """
    if settings.url:
        from retrieval.store.server import ServerStore

        return ServerStore.connect(settings)
    from retrieval.store.edge import EdgeStore

    return EdgeStore(settings.storage_path(state_dir), settings)
