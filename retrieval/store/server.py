"""Qdrant server or cluster by URL, through qdrant-client: the same points, the same query model.

Collections are ``rs_<name>`` with ``shard_number``, ``replication_factor`` and ``write_consistency_factor`` from
the settings, the system payload indexes (``document_id`` keyword, ...) and any declared metadata ones. Specs
(and tuned settings) live on the server in the ``ragswap_collections`` collection, so every gateway sharing the
server sees a collection another created; they are cached for at most :data:`SPEC_TTL_S`.

``retrieval.url = ":memory:"`` runs qdrant-client's local mode instead, which implements the same API in
Python: the tests use it as the stand-in for a server (docs/retrieval.md lists what it does not verify).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import CollectionExistsError, CollectionNotFoundError
from retrieval.settings import PayloadIndexType, RetrievalSettings
from retrieval.sparse import SparseVector
from retrieval.store.base import (
    DENSE,
    SPARSE,
    SYSTEM_INDEXES,
    CollectionSpec,
    PointData,
    QueryResult,
    StoredSection,
    StoreQuery,
    check_name,
    document_batches,
    facet_sum,
    stored_hit,
    stored_section,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)
SPECS = "ragswap_collections"
SPEC_TTL_S = 1.0
"""Longest a gateway serves a cached spec: a collection created or tuned elsewhere is seen within this."""
_SPEC_NS = uuid.UUID("0f7d2a4e-5d3b-4c1a-8e59-1b7f0c3a9d21")


def qdrant_name(name: str) -> str:
    return f"rs_{name}"


def _models() -> Any:
    from qdrant_client import models

    return models


def _schema(kind: PayloadIndexType) -> Any:
    m = _models()
    return {
        "keyword": m.PayloadSchemaType.KEYWORD,
        "integer": m.PayloadSchemaType.INTEGER,
        "float": m.PayloadSchemaType.FLOAT,
        "bool": m.PayloadSchemaType.BOOL,
    }[kind]


class ServerStore:
    """The :class:`~retrieval.store.base.ChunkStore` of a Qdrant server (or of qdrant-client's local mode)."""

    def __init__(self, client: QdrantClient, settings: RetrievalSettings) -> None:
        self.client = client
        self.settings = settings
        self.local = not hasattr(client._client, "openapi_client")
        # qdrant-client's local mode is not thread-safe; a server client does not need the lock.
        self._lock: threading.RLock | None = threading.RLock() if self.local else None
        self._cache: dict[str, tuple[float, CollectionSpec | None]] = {}
        self._ensure_specs()

    @classmethod
    def connect(cls, settings: RetrievalSettings) -> ServerStore:
        from qdrant_client import QdrantClient

        if settings.url == ":memory:":
            return cls(QdrantClient(location=":memory:"), settings)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(QdrantClient(url=settings.url, api_key=key, timeout=int(settings.timeout_s)), settings)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # local mode: "payload indexes have no effect" etc.
            return fn(*args, **kwargs)

    def close(self) -> None:
        self._call(self.client.close)

    # -- specs -------------------------------------------------------------------------------------------
    def _ensure_specs(self) -> None:
        m = _models()
        if not self._call(self.client.collection_exists, SPECS):
            try:
                self._call(
                    self.client.create_collection,
                    SPECS,
                    vectors_config=m.VectorParams(size=1, distance=m.Distance.DOT),
                    replication_factor=self.settings.replication_factor,
                    write_consistency_factor=self.settings.write_consistency_factor,
                )
            except Exception:  # another gateway created it first
                if not self._call(self.client.collection_exists, SPECS):
                    raise

    def list_specs(self) -> list[CollectionSpec]:
        points, _ = self._call(self.client.scroll, SPECS, limit=10_000, with_payload=True)
        specs = [CollectionSpec.model_validate(p.payload) for p in points if p.payload]
        now = time.monotonic()
        for s in specs:
            self._cache[s.name] = (now, s)
        return sorted(specs, key=lambda s: s.name)

    def _fetch(self, name: str) -> CollectionSpec | None:
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < SPEC_TTL_S:
            return cached[1]
        found = self._call(self.client.retrieve, SPECS, [str(uuid.uuid5(_SPEC_NS, name))], with_payload=True)
        spec = CollectionSpec.model_validate(found[0].payload) if found and found[0].payload else None
        self._cache[name] = (time.monotonic(), spec)
        return spec

    def spec(self, name: str) -> CollectionSpec:
        spec = self._fetch(name)
        if spec is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist", param="collection")
        return spec

    def save_spec(self, spec: CollectionSpec) -> None:
        m = _models()
        point = m.PointStruct(
            id=str(uuid.uuid5(_SPEC_NS, spec.name)), vector=[1.0], payload=spec.model_dump(mode="json")
        )
        self._call(self.client.upsert, SPECS, [point], wait=True)
        self._cache[spec.name] = (time.monotonic(), spec)

    def create(self, spec: CollectionSpec) -> None:
        m = _models()
        check_name(spec.name)
        self._cache.pop(spec.name, None)
        if self._fetch(spec.name) is not None:
            raise CollectionExistsError(f"collection {spec.name!r} already exists", param="name")
        qname = qdrant_name(spec.name)
        if self._call(self.client.collection_exists, qname):  # left by a create that failed half-way
            self._call(self.client.delete_collection, qname)
        self._call(
            self.client.create_collection,
            qname,
            vectors_config={
                DENSE: m.VectorParams(
                    size=spec.dimension,
                    distance=m.Distance.COSINE,
                    multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                )
            },
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            shard_number=self.settings.shard_number,
            replication_factor=self.settings.replication_factor,
            write_consistency_factor=self.settings.write_consistency_factor,
        )
        indexes = {**SYSTEM_INDEXES, **{f"meta.{k}": v for k, v in spec.payload_indexes.items()}}
        for key, kind in indexes.items():
            self._call(self.client.create_payload_index, qname, key, field_schema=_schema(kind), wait=True)
        self.save_spec(spec)  # last: the collection is visible only once it is complete

    def drop(self, name: str) -> None:
        self.spec(name)
        self._call(self.client.delete, SPECS, points_selector=[str(uuid.uuid5(_SPEC_NS, name))], wait=True)
        self._cache.pop(name, None)
        self._call(self.client.delete_collection, qdrant_name(name))

    # -- reads -------------------------------------------------------------------------------------------
    def _scroll(self, name: str, flt: Any, fields: list[str] | bool) -> Iterator[list[Any]]:
        offset = None
        while True:
            points, offset = self._call(
                self.client.scroll,
                qdrant_name(name),
                scroll_filter=flt,
                limit=1024,
                offset=offset,
                with_payload=fields,
                with_vectors=False,
            )
            if points:
                yield points
            if offset is None:
                return

    def sections_of(self, name: str, document_ids: list[str]) -> dict[str, list[StoredSection]]:
        m = _models()
        self.spec(name)
        out: dict[str, list[StoredSection]] = {d: [] for d in document_ids}
        for start in range(0, len(document_ids), 1024):
            ids = document_ids[start : start + 1024]
            flt = m.Filter(must=[m.FieldCondition(key="document_id", match=m.MatchAny(any=ids))])
            for points in self._scroll(name, flt, ["document_id", "chunks"]):
                for p in points:
                    section = stored_section(p.id, p.payload or {})
                    out[section.document_id].append(section)
        return out

    def vectors(self, name: str, ids: list[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        points = self._call(self.client.retrieve, qdrant_name(name), list(ids), with_vectors=[DENSE])
        out = {}
        for p in points:
            raw = p.vector.get(DENSE) if isinstance(p.vector, dict) else None
            if raw is not None:
                out[str(p.id)] = np.asarray(raw, dtype=np.float32)
        return out

    def _requests(self, query: StoreQuery) -> list[Any]:
        """The Query API requests of ``query``: the fused one and, for per-stage scores, the BM25 list alone."""
        m = _models()
        flt = query.filter.build(m) if query.filter is not None else None
        dense = [list(query.dense)] if query.dense is not None else None
        sparse = (
            m.SparseVector(indices=list(query.sparse.indices), values=list(query.sparse.values))
            if query.sparse
            else None
        )
        bm25_only = m.QueryRequest(
            query=sparse, using=SPARSE, limit=query.candidates, filter=flt, with_payload=False
        )
        payload: list[str] | bool = ["document_id"] if query.ids_only else True
        vectors: list[str] | bool = False if query.ids_only else [DENSE]
        if query.hybrid:
            fusion = (
                m.FusionQuery(fusion=m.Fusion.DBSF)
                if query.fusion == "dbsf"
                else m.RrfQuery(
                    rrf=m.Rrf(k=query.rrf_k, weights=list(query.weights) if query.weights else None)
                )
            )
            main = m.QueryRequest(
                prefetch=[
                    m.Prefetch(query=dense, using=DENSE, limit=query.candidates, filter=flt),
                    m.Prefetch(query=sparse, using=SPARSE, limit=query.candidates, filter=flt),
                ],
                query=fusion,
                limit=query.limit,
                filter=flt,
                with_payload=payload,
                with_vector=vectors,
            )
            return [main] if query.ids_only else [main, bm25_only]
        if dense is not None:
            return [
                m.QueryRequest(
                    query=dense,
                    using=DENSE,
                    limit=query.limit,
                    filter=flt,
                    with_payload=payload,
                    with_vector=vectors,
                )
            ]
        return [
            m.QueryRequest(query=sparse, using=SPARSE, limit=query.limit, filter=flt, with_payload=payload)
        ]

    def query(self, name: str, query: StoreQuery) -> QueryResult:
        self.spec(name)
        if query.dense is None and not query.sparse:
            return QueryResult([])
        responses = self._call(self.client.query_batch_points, qdrant_name(name), self._requests(query))
        hits = [stored_hit(p.id, p.score, p.payload, p.vector) for p in responses[0].points]
        if query.hybrid and not query.ids_only:
            return QueryResult(hits, {str(p.id): float(p.score) for p in responses[1].points})
        return QueryResult(hits, {h.id: h.score for h in hits} if query.dense is None else {})

    def scroll_sections(self, name: str) -> Iterator[list[tuple[str, str, str]]]:
        self.spec(name)
        for points in self._scroll(name, None, ["document_id", "text"]):
            yield [
                (str(p.id), str((p.payload or {})["document_id"]), str((p.payload or {})["text"]))
                for p in points
            ]

    def counts(self, name: str) -> tuple[int, int]:
        m = _models()
        self.spec(name)
        qname = qdrant_name(name)
        lead = m.Filter(must=[m.FieldCondition(key="lead", match=m.MatchValue(value=True))])
        documents = self._call(self.client.count, qname, count_filter=lead, exact=True).count
        facet = self._call(self.client.facet, qname, key="n_chunks", limit=100_000, exact=True)
        return int(documents), facet_sum([(h.value, h.count) for h in facet.hits])

    # -- writes ------------------------------------------------------------------------------------------
    def write(self, name: str, add: list[PointData], remove: list[str]) -> None:
        m = _models()
        self.spec(name)
        qname = qdrant_name(name)
        seq = time.time_ns()  # orders writes of several gateways; no hiding of unfinished ones on a server
        for batch in document_batches(add):
            points = [
                m.PointStruct(
                    id=p.section.id,
                    vector={
                        DENSE: p.vectors.tolist(),
                        SPARSE: m.SparseVector(indices=list(p.sparse.indices), values=list(p.sparse.values)),
                    },
                    payload=p.section.payload(p.version, seq),
                )
                for p in batch
            ]
            self._call(self.client.upsert, qname, points, wait=True)
        if remove:
            self._call(self.client.delete, qname, points_selector=list(remove), wait=True)

    def set_sparse(self, name: str, vectors: dict[str, SparseVector]) -> None:
        m = _models()
        items = list(vectors.items())
        for start in range(0, len(items), 1024):
            self._call(
                self.client.update_vectors,
                qdrant_name(name),
                [
                    m.PointVectors(
                        id=pid,
                        vector={SPARSE: m.SparseVector(indices=list(v.indices), values=list(v.values))},
                    )
                    for pid, v in items[start : start + 1024]
                ],
                wait=True,
            )
