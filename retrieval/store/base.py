"""The storage contract and the pieces both Qdrant backends share (collection specs, payloads, point writes)."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from retrieval.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidSearchError,
    StoreBusyError,
)
from retrieval.filters import MetadataFilter
from retrieval.settings import Bm25Settings, ChunkingSettings, EmbeddingPrecision, RetrievalSettings
from retrieval.types import Chunk

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SPECS = "ragswap_collections"
DENSE = "dense"
SPARSE = "bm25"
_SPEC_NS = uuid.UUID("0f7d2a4e-5d3b-4c1a-8e59-1b7f0c3a9d21")


class CollectionSpec(BaseModel):
    """What a collection was created with; stored in Qdrant beside its points."""

    name: str
    embedding_model: str
    dimension: int
    embedding_precision: EmbeddingPrecision = "float32"
    """Documents and queries are embedded at the same precision (specs written before it existed: float32)."""
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    bm25: Bm25Settings = Field(default_factory=Bm25Settings)
    created_at: float = Field(default_factory=time.time)
    avg_tokens: float = 150.0
    """Mean BM25 tokens per chunk (server backend: the length normalisation of the sparse vectors)."""


def check_name(name: str) -> None:
    if not NAME_RE.match(name) or name == SPECS:
        raise InvalidSearchError(
            f"invalid collection name {name!r}: letters, digits, '_' and '-', at most 64", param="name"
        )


def qdrant_name(name: str) -> str:
    return f"rs_{name}"


class ChunkStore(Protocol):
    """Where chunks, their vectors and their BM25 index live. Ids are chunk ids (UUID strings)."""

    def list_specs(self) -> list[CollectionSpec]: ...

    def spec(self, name: str) -> CollectionSpec:
        """Raises CollectionNotFoundError."""
        ...

    def create(self, spec: CollectionSpec) -> None: ...

    def drop(self, name: str) -> None: ...

    def chunk_ids(self, name: str, document_ids: list[str]) -> dict[str, set[str]]:
        """The stored chunk ids of each of ``document_ids`` (absent documents map to an empty set)."""
        ...

    def write(self, name: str, add: list[Chunk], vectors: np.ndarray, remove: list[str]) -> None:
        """Add chunks (with their unit-norm vectors) and remove chunk ids; on failure the previous state stays."""
        ...

    def dense(
        self, name: str, vector: np.ndarray, limit: int, flt: MetadataFilter | None
    ) -> dict[str, float]:
        """Cosine similarity of the ``limit`` nearest chunks."""
        ...

    def bm25(self, name: str, query: str, limit: int, flt: MetadataFilter | None) -> dict[str, float]:
        """BM25 score of the ``limit`` best chunks with a positive score."""
        ...

    def dense_scores(self, name: str, vector: np.ndarray, ids: list[str]) -> dict[str, float]:
        """Cosine similarity of given chunks (for candidates only BM25 found)."""
        ...

    def get(self, name: str, ids: list[str]) -> dict[str, Chunk]: ...

    def counts(self, name: str) -> tuple[int, int]:
        """(documents, chunks)."""
        ...

    def close(self) -> None: ...


class QdrantBase:
    """Specs, point writes and lookups through qdrant-client, identical for local mode and a server."""

    sparse_in_qdrant = False

    def __init__(self, client: QdrantClient, settings: RetrievalSettings) -> None:
        self.client = client
        self.settings = settings
        # qdrant-client's local mode is not thread-safe; a server client does not mind the lock.
        self.lock = threading.RLock()
        self._ensure_specs()

    # -- collection specs --------------------------------------------------------------------------------
    def _ensure_specs(self) -> None:
        from qdrant_client import models

        with self.lock:
            if not self.client.collection_exists(SPECS):
                self.client.create_collection(
                    SPECS, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT)
                )

    def list_specs(self) -> list[CollectionSpec]:
        with self.lock:
            points, _ = self.client.scroll(SPECS, limit=10_000, with_payload=True)
        specs = [CollectionSpec.model_validate(p.payload) for p in points if p.payload]
        return sorted(specs, key=lambda s: s.name)

    def spec(self, name: str) -> CollectionSpec:
        with self.lock:
            found = self.client.retrieve(SPECS, [str(uuid.uuid5(_SPEC_NS, name))], with_payload=True)
        if not found or not found[0].payload:
            raise CollectionNotFoundError(f"collection {name!r} does not exist", param="collection")
        return CollectionSpec.model_validate(found[0].payload)

    def _save_spec(self, spec: CollectionSpec) -> None:
        from qdrant_client import models

        point = models.PointStruct(
            id=str(uuid.uuid5(_SPEC_NS, spec.name)), vector=[1.0], payload=spec.model_dump(mode="json")
        )
        with self.lock:
            self.client.upsert(SPECS, [point])

    def create(self, spec: CollectionSpec) -> None:
        from qdrant_client import models

        check_name(spec.name)
        with self.lock:
            if any(s.name == spec.name for s in self.list_specs()):
                raise CollectionExistsError(f"collection {spec.name!r} already exists", param="name")
            qname = qdrant_name(spec.name)
            if self.client.collection_exists(qname):
                self.client.delete_collection(qname)
            self.client.create_collection(
                qname,
                vectors_config={
                    DENSE: models.VectorParams(size=spec.dimension, distance=models.Distance.COSINE)
                },
                sparse_vectors_config=(
                    {SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)}
                    if self.sparse_in_qdrant
                    else None
                ),
                **self._create_kwargs(),
            )
            self._after_create(qname)
            self._save_spec(spec)

    def _create_kwargs(self) -> dict[str, Any]:
        return {}

    def _after_create(self, qname: str) -> None:
        return None

    def drop(self, name: str) -> None:
        self.spec(name)
        with self.lock:
            self.client.delete_collection(qdrant_name(name))
            self.client.delete(SPECS, points_selector=[str(uuid.uuid5(_SPEC_NS, name))])

    # -- points ------------------------------------------------------------------------------------------
    def _points(self, spec: CollectionSpec, chunks: list[Chunk], vectors: np.ndarray) -> list[Any]:
        from qdrant_client import models

        return [
            models.PointStruct(id=c.id, vector={DENSE: v.tolist()}, payload=c.payload())
            for c, v in zip(chunks, vectors, strict=True)
        ]

    def _upsert_atomic(self, name: str, add: list[Chunk], vectors: np.ndarray, remove: list[str]) -> None:
        """Upsert in batches, then delete; undo the added points if anything fails before the deletes."""
        spec = self.spec(name)
        qname = qdrant_name(name)
        done: list[str] = []
        with self.lock:
            try:
                for start in range(0, len(add), 256):
                    batch = add[start : start + 256]
                    self.client.upsert(
                        qname, self._points(spec, batch, vectors[start : start + 256]), wait=True
                    )
                    done.extend(c.id for c in batch)
            except BaseException:
                if done:
                    logger.warning("ingest failed; removing the %d points already written", len(done))
                    self.client.delete(qname, points_selector=list(done))
                raise
            if remove:
                self.client.delete(qname, points_selector=list(remove), wait=True)

    def _scroll(self, name: str, flt: Any = None, vectors: bool = False) -> Iterator[Any]:
        offset = None
        while True:
            with self.lock:
                points, offset = self.client.scroll(
                    qdrant_name(name),
                    scroll_filter=flt,
                    limit=1024,
                    offset=offset,
                    with_payload=True,
                    with_vectors=[DENSE] if vectors else False,
                )
            yield from points
            if offset is None:
                return

    def close(self) -> None:
        with self.lock:
            self.client.close()


def open_store(settings: RetrievalSettings, state_dir: Path) -> ChunkStore:
    """The embedded store (see :meth:`RetrievalSettings.storage_path`) or, with ``settings.url``, a Qdrant
    server/cluster.

    Raises:
        StoreBusyError: another process holds the embedded store open.
    """
    if settings.url:
        from retrieval.store.server import ServerStore

        return ServerStore(settings)
    from retrieval.store.embedded import EmbeddedStore

    path = settings.storage_path(state_dir)
    try:
        return EmbeddedStore(settings, path)
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StoreBusyError(
                f"{path} is open in another ragswap process (Qdrant local mode allows one); stop it or use "
                "the HTTP API of the running gateway"
            ) from exc
        raise
