"""Qdrant server/cluster backend: dense and BM25 sparse vectors both searched by Qdrant.

Collections are created with ``shard_number`` / ``replication_factor`` from the settings and a keyword payload
index on ``document_id``; the BM25 sparse vectors carry term weights and Qdrant applies the IDF
(``Modifier.IDF``). Not exercised by the test suite: no Qdrant server can be installed on the build machine, so
this path is checked by typing and review only (see docs/retrieval.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval.bm25 import bm25_sparse_query, bm25_sparse_vector
from retrieval.filters import MetadataFilter
from retrieval.settings import RetrievalSettings
from retrieval.store.base import DENSE, SPARSE, CollectionSpec, QdrantBase, qdrant_name
from retrieval.types import Chunk


class ServerStore(QdrantBase):
    """The same code path as the embedded store for writes, Qdrant queries for search."""

    sparse_in_qdrant = True

    def __init__(self, settings: RetrievalSettings) -> None:
        from qdrant_client import QdrantClient

        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        super().__init__(QdrantClient(url=settings.url, api_key=api_key, timeout=30), settings)

    def _create_kwargs(self) -> dict[str, Any]:
        return {
            "shard_number": self.settings.shard_number,
            "replication_factor": self.settings.replication_factor,
        }

    def _after_create(self, qname: str) -> None:
        from qdrant_client import models

        self.client.create_payload_index(qname, "document_id", field_schema=models.PayloadSchemaType.KEYWORD)

    def _points(self, spec: CollectionSpec, chunks: list[Chunk], vectors: np.ndarray) -> list[Any]:
        from qdrant_client import models

        points = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            indices, values = bm25_sparse_vector(chunk.text, spec.bm25, spec.avg_tokens)
            points.append(
                models.PointStruct(
                    id=chunk.id,
                    vector={
                        DENSE: vector.tolist(),
                        SPARSE: models.SparseVector(indices=indices, values=values),
                    },
                    payload=chunk.payload(),
                )
            )
        return points

    def chunk_ids(self, name: str, document_ids: list[str]) -> dict[str, set[str]]:
        from qdrant_client import models

        out: dict[str, set[str]] = {d: set() for d in document_ids}
        if not document_ids:
            return out
        flt = models.Filter(
            must=[models.FieldCondition(key="document_id", match=models.MatchAny(any=list(document_ids)))]
        )
        for point in self._scroll(name, flt):
            out[str((point.payload or {})["document_id"])].add(str(point.id))
        return out

    def write(self, name: str, add: list[Chunk], vectors: np.ndarray, remove: list[str]) -> None:
        self._upsert_atomic(name, add, vectors, remove)

    def _query(
        self, name: str, query: Any, using: str, limit: int, flt: MetadataFilter | None
    ) -> dict[str, float]:
        with self.lock:
            result = self.client.query_points(
                qdrant_name(name),
                query=query,
                using=using,
                limit=limit,
                query_filter=flt.to_qdrant() if flt else None,
                with_payload=False,
            )
        return {str(p.id): float(p.score) for p in result.points}

    def dense(
        self, name: str, vector: np.ndarray, limit: int, flt: MetadataFilter | None
    ) -> dict[str, float]:
        return self._query(name, vector.tolist(), DENSE, limit, flt)

    def bm25(self, name: str, query: str, limit: int, flt: MetadataFilter | None) -> dict[str, float]:
        from qdrant_client import models

        indices, values = bm25_sparse_query(query)
        if not indices:
            return {}
        hits = self._query(name, models.SparseVector(indices=indices, values=values), SPARSE, limit, flt)
        return {k: v for k, v in hits.items() if v > 0}

    def dense_scores(self, name: str, vector: np.ndarray, ids: list[str]) -> dict[str, float]:
        if not ids:
            return {}
        with self.lock:
            points = self.client.retrieve(qdrant_name(name), ids, with_vectors=[DENSE])
        out = {}
        for p in points:
            raw = p.vector.get(DENSE) if isinstance(p.vector, dict) else None
            if raw is not None:
                v = np.asarray(raw, dtype=np.float32)
                out[str(p.id)] = float(v @ vector / max(float(np.linalg.norm(v)), 1e-12))
        return out

    def get(self, name: str, ids: list[str]) -> dict[str, Chunk]:
        if not ids:
            return {}
        with self.lock:
            points = self.client.retrieve(qdrant_name(name), ids, with_payload=True)
        return {str(p.id): Chunk.from_payload(str(p.id), dict(p.payload or {})) for p in points}

    def counts(self, name: str) -> tuple[int, int]:
        with self.lock:
            chunks = self.client.count(qdrant_name(name), exact=True).count
            facets = self.client.facet(qdrant_name(name), key="document_id", limit=1_000_000, exact=True)
        return len(facets.hits), int(chunks)
