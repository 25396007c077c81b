"""The retrieval service: collections, ingestion and search over a :class:`ChunkStore`.

One instance per process (the gateway builds it in its lifespan, the CLI per command); it owns the store and
loads each embedder once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ragswap import ModelSettings
from retrieval import fusion
from retrieval.chunking import Chunker, TokenMeter
from retrieval.errors import InvalidDocumentError, InvalidSearchError
from retrieval.models import Embedder, ModelCache, Reranker
from retrieval.search import ResolvedQuery, SearchQuery
from retrieval.settings import (
    Bm25Settings,
    ChunkingSettings,
    EmbeddingPrecision,
    PayloadIndexType,
    RetrievalSettings,
)
from retrieval.sparse import Bm25Encoder, SparseVector, overlap_score, term_count
from retrieval.store import ChunkStore, CollectionSpec, PointData, StoredHit, StoreQuery, open_store
from retrieval.store.base import check_name, max_sim
from retrieval.types import Chunk, Document, Hit, IngestReport, Section

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
"""Called with (chunks encoded so far, chunks to encode)."""


@dataclass(frozen=True)
class CollectionInfo:
    spec: CollectionSpec
    documents: int
    chunks: int


def _query_thread(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)  # OpenMP's thread count is per calling thread: this one only


def document_version(document: Document) -> str:
    """Hash of a document's text and metadata: all sections of one version of a document share it."""
    meta = json.dumps(document.metadata, sort_keys=True, default=str)
    return hashlib.sha256(f"{document.id}\x00{document.text}\x00{meta}".encode()).hexdigest()[:16]


class RetrievalService:
    """Create collections, ingest documents idempotently and search them (dense, BM25, hybrid, reranked)."""

    def __init__(
        self,
        settings: RetrievalSettings,
        models: ModelSettings,
        state_dir: Path,
        store: ChunkStore | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.model_cache = ModelCache(models)
        self.store = store or open_store(settings, state_dir)
        self._write_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # Query embeddings run on one thread with few intra-op threads: a short query gains nothing from more,
        # and they would compete with an engine's OpenMP threads on the same cores.
        self._query_pool = ThreadPoolExecutor(
            1, thread_name_prefix="query-embed", initializer=_query_thread, initargs=(settings.query_threads,)
        )

    def close(self) -> None:
        self._query_pool.shutdown(wait=False)
        self.store.close()

    # -- models ------------------------------------------------------------------------------------------
    def embedder(self, spec: CollectionSpec) -> Embedder:
        return self.model_cache.embedder(spec.embedding_model, spec.embedding_precision)

    @property
    def reranker(self) -> Reranker | None:
        if not self.settings.reranker:
            return None
        return self.model_cache.reranker(self.settings.reranker)

    def chunker(self, spec: CollectionSpec) -> Chunker:
        embedder = self.embedder(spec)
        return Chunker(
            spec.chunking,
            TokenMeter(embedder.tokenizer),
            embedder.max_tokens,
            embed=lambda texts: embedder.encode(texts, self.settings.batch_size),
        )

    def embed_query(self, spec: CollectionSpec, text: str) -> np.ndarray:
        """The unit query vector, computed on the query thread."""
        embedder = self.embedder(spec)
        return self._query_pool.submit(embedder.encode, [text]).result()[0]

    def _write_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._write_locks.setdefault(name, threading.Lock())

    # -- collections -------------------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        *,
        embedding_model: str | None = None,
        chunking: ChunkingSettings | None = None,
        bm25: Bm25Settings | None = None,
        embedding_precision: EmbeddingPrecision | None = None,
        payload_indexes: dict[str, PayloadIndexType] | None = None,
    ) -> CollectionSpec:
        check_name(name)
        model = embedding_model or self.settings.embedding_model or self.models.embedding_model
        precision = embedding_precision or self.settings.embedding_precision
        embedder = self.model_cache.embedder(model, precision)
        spec = CollectionSpec(
            name=name,
            embedding_model=model,
            dimension=embedder.dimension,
            embedding_precision=precision,
            chunking=chunking or self.settings.chunking,
            bm25=bm25 or self.settings.bm25,
            payload_indexes=payload_indexes or {},
        )
        self.store.create(spec)
        logger.info(
            "created collection",
            extra={"collection": name, "embedding_model": model, "embedding_precision": precision},
        )
        return spec

    def ensure_collection(self, name: str) -> CollectionSpec:
        """The collection's spec, creating it with the defaults when it does not exist."""
        if any(s.name == name for s in self.store.list_specs()):
            return self.store.spec(name)
        return self.create_collection(name)

    def describe(self, name: str) -> CollectionInfo:
        spec = self.store.spec(name)
        documents, chunks = self.store.counts(name)
        return CollectionInfo(spec, documents, chunks)

    def list_collections(self) -> list[CollectionInfo]:
        return [self.describe(spec.name) for spec in self.store.list_specs()]

    def delete_collection(self, name: str) -> None:
        self.store.drop(name)
        logger.info("deleted collection", extra={"collection": name})

    # -- documents ---------------------------------------------------------------------------------------
    def sections(self, spec: CollectionSpec, documents: Iterable[Document]) -> list[Section]:
        """Every document's sections, in order.

        Raises:
            InvalidDocumentError: a document without text.
        """
        chunker = self.chunker(spec)
        out: list[Section] = []
        for doc in documents:
            if not doc.text.strip():
                raise InvalidDocumentError(f"document {doc.id!r} is empty", param="documents")
            out.extend(chunker.sections(doc))
        return out

    def chunk_documents(self, spec: CollectionSpec, documents: Iterable[Document]) -> list[Chunk]:
        """Every document's chunks, in order (what the embedder reads)."""
        return [c for s in self.sections(spec, documents) for c in s.chunks]

    def ingest(
        self,
        name: str,
        documents: Iterable[Document],
        progress: Progress | None = None,
        vectors: dict[str, np.ndarray] | None = None,
    ) -> IngestReport:
        """Add or replace documents (by id). Unchanged sections are not rewritten; unchanged chunks are not
        re-encoded (their stored vectors are reused).

        Everything is parsed, chunked and encoded before the store is touched, so a failure leaves the
        collection as it was; the store writes whole documents (see :meth:`ChunkStore.write`).

        Args:
            vectors: precomputed unit vectors by chunk id (benchmarks reuse cached embeddings).
        """
        start = time.perf_counter()
        docs: dict[str, Document] = {}
        for doc in documents:
            docs[doc.id] = doc
        if not docs:
            raise InvalidDocumentError("no documents to ingest", param="documents")
        with self._write_lock(name):
            spec = self.store.spec(name)
            sections = self.sections(spec, docs.values())
            existing = self.store.sections_of(name, list(docs))
            old_sections = {s.id: s for stored in existing.values() for s in stored}
            old_chunks = {cid for s in old_sections.values() for cid in s.chunk_ids}
            new_chunks = {c.id for s in sections for c in s.chunks}
            fresh = [s for s in sections if s.id not in old_sections]
            remove = sorted(set(old_sections) - {s.id for s in sections})
            known = dict(vectors or {})
            reusable = [sid for sid in remove if any(c in new_chunks for c in old_sections[sid].chunk_ids)]
            for sid, matrix in self.store.vectors(name, reusable).items():
                known.update(zip(old_sections[sid].chunk_ids, matrix, strict=False))
            spec = self._measure_avg_len(spec, sections)
            points = self._points(spec, fresh, docs, known, progress)
            self.store.write(name, points, remove)
        report = IngestReport(
            documents=len(docs),
            chunks_added=len(new_chunks - old_chunks),
            chunks_unchanged=len(new_chunks & old_chunks),
            chunks_removed=len(old_chunks - new_chunks),
            seconds=time.perf_counter() - start,
        )
        logger.info("ingested", extra={"collection": name, **report.__dict__})
        return report

    def _measure_avg_len(self, spec: CollectionSpec, sections: list[Section]) -> CollectionSpec:
        """Fix the collection's BM25 ``avg_len`` from its first documents (kept for every later one)."""
        if spec.bm25.avg_len is not None or not sections:
            return spec
        sample = sections[:5000]
        avg = max(1.0, float(np.mean([term_count(s.text, spec.bm25.language) for s in sample])))
        spec = spec.model_copy(update={"bm25": spec.bm25.model_copy(update={"avg_len": round(avg, 1)})})
        self.store.save_spec(spec)
        logger.info("measured BM25 avg_len", extra={"collection": spec.name, "avg_len": avg})
        return spec

    def _points(
        self,
        spec: CollectionSpec,
        sections: list[Section],
        docs: dict[str, Document],
        known: dict[str, np.ndarray],
        progress: Progress | None,
    ) -> list[PointData]:
        chunks = [c for s in sections for c in s.chunks]
        matrix = self.encode_chunks(spec, chunks, progress, known)
        bm25 = Bm25Encoder(spec.bm25)
        points, row = [], 0
        for s in sections:
            n = len(s.chunks)
            version = document_version(docs[s.document_id])
            points.append(PointData(s, matrix[row : row + n], bm25.document(s.text), version))
            row += n
        return points

    def encode_chunks(
        self,
        spec: CollectionSpec,
        chunks: list[Chunk],
        progress: Progress | None = None,
        vectors: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Unit vectors of ``chunks`` in their order; encoded longest-first in large blocks so batches pad little."""
        out = np.zeros((len(chunks), spec.dimension), dtype=np.float32)
        todo = [i for i, c in enumerate(chunks) if vectors is None or c.id not in vectors]
        for i, c in enumerate(chunks):
            if vectors is not None and c.id in vectors:
                out[i] = vectors[c.id]
        if not todo:
            if progress:
                progress(len(chunks), len(chunks))
            return out
        embedder = self.embedder(spec)
        todo.sort(key=lambda i: len(chunks[i].text), reverse=True)
        block = self.settings.batch_size * 8
        done = len(chunks) - len(todo)
        for s in range(0, len(todo), block):
            rows = todo[s : s + block]
            out[rows] = embedder.encode([chunks[i].text for i in rows], self.settings.batch_size)
            done += len(rows)
            if progress:
                progress(done, len(chunks))
        return out

    def delete_documents(self, name: str, document_ids: list[str]) -> int:
        """Remove documents; returns how many chunks went away (0 for unknown ids)."""
        with self._write_lock(name):
            existing = self.store.sections_of(name, document_ids)
            stored = [s for sections in existing.values() for s in sections]
            if stored:
                self.store.write(name, [], [s.id for s in stored])
        return sum(len(s.chunk_ids) for s in stored)

    def update_search_settings(self, name: str, spec: CollectionSpec) -> None:
        """Store tuned settings (and BM25 parameters) with a collection; re-weighs its BM25 vectors when the
        BM25 parameters changed."""
        with self._write_lock(name):
            current = self.store.spec(name)
            if spec.bm25 != current.bm25:
                encoder = Bm25Encoder(spec.bm25)
                for batch in self.store.scroll_sections(name):
                    self.store.set_sparse(name, {sid: encoder.document(text) for sid, _, text in batch})
            self.store.save_spec(spec)

    # -- search ------------------------------------------------------------------------------------------
    def resolve(self, q: SearchQuery, spec: CollectionSpec) -> ResolvedQuery:
        return q.resolve(spec.search, self.settings.search)

    def search(self, q: SearchQuery) -> list[Hit]:
        """Dense, BM25 or fused candidates, optionally reranked; each hit carries every stage's score and the
        best chunk of its section (the text and offsets a citation shows)."""
        plan = self._plan(q)
        if plan is None:
            return []
        spec, r, vector, sparse, do_rerank, store_query = plan
        result = self.store.query(r.collection, store_query)
        chunk_bm25 = Bm25Encoder(spec.bm25)
        hits = [self._hit(h, r, vector, sparse, chunk_bm25, result.bm25) for h in result.hits]
        if r.group_by == "document":
            hits = _one_per_document(hits)
        if do_rerank:
            reranker = self.reranker
            assert reranker is not None
            hits = self._rerank(reranker, r, hits)
        return hits[: r.top_k]

    def rank_documents(self, q: SearchQuery) -> list[str]:
        """The document ids :meth:`search` would return, in order, fetched without payload text or vectors
        (evaluation and tuning rank thousands of queries; with reranking it is :meth:`search` itself)."""
        plan = self._plan(q)
        if plan is None:
            return []
        _, r, _, _, do_rerank, store_query = plan
        if do_rerank:
            return [h.chunk.document_id for h in self.search(q)]
        result = self.store.query(r.collection, replace(store_query, ids_only=True))
        return list(dict.fromkeys(str(h.payload["document_id"]) for h in result.hits))[: r.top_k]

    def _plan(
        self, q: SearchQuery
    ) -> (
        tuple[CollectionSpec, ResolvedQuery, np.ndarray | None, SparseVector | None, bool, StoreQuery] | None
    ):
        """Everything a search needs before the engine runs it; ``None`` when nothing can match."""
        if not q.query.strip():
            raise InvalidSearchError("query must not be empty", param="query")
        spec = self.store.spec(q.collection)
        r = self.resolve(q, spec)
        reranker = self.reranker
        if r.rerank and reranker is None:
            raise InvalidSearchError(
                "reranking needs a trained cross-encoder: set retrieval.reranker", param="rerank"
            )
        do_rerank = reranker is not None and (r.rerank if r.rerank is not None else True)
        vector = None
        if r.mode != "bm25":
            vector = r.vector if r.vector is not None else self.embed_query(spec, r.query)
        sparse = Bm25Encoder(spec.bm25).query(r.query) if r.mode != "dense" else None
        if r.mode == "bm25" and not sparse:
            return None  # no query term BM25 knows (stopwords only)
        wanted = max(r.top_k, r.rerank_depth if do_rerank else 0)
        # Sections of one document may repeat; fetch enough to keep ``wanted`` documents.
        limit = wanted if r.group_by == "section" else wanted + max(10, wanted // 2)
        weights = (2 * (1 - r.weight), 2 * r.weight) if r.fusion == "weighted" else None
        store_query = StoreQuery(
            dense=tuple(float(x) for x in vector) if vector is not None else None,
            sparse=sparse,
            candidates=max(r.candidates, limit),
            limit=limit,
            fusion="dbsf" if r.fusion == "dbsf" else "rrf",
            rrf_k=r.rrf_k,
            weights=weights,
            filter=r.filter,
        )
        return spec, r, vector, sparse, do_rerank, store_query

    def _hit(
        self,
        stored: StoredHit,
        r: ResolvedQuery,
        vector: np.ndarray | None,
        sparse: SparseVector | None,
        encoder: Bm25Encoder,
        bm25: dict[str, float],
    ) -> Hit:
        """A stored section as a hit: its best chunk by cosine similarity to the query (or, without a query
        vector, by the query terms' BM25 weight in each chunk)."""
        section = Section.from_payload(stored.id, stored.payload)
        scores: dict[str, float] = {}
        best = 0
        if vector is not None and stored.vectors is not None and len(stored.vectors):
            scores["dense"], best = max_sim(stored.vectors, np.asarray(vector, dtype=np.float32))
        elif len(section.chunks) > 1 and sparse:
            overlaps = [overlap_score(sparse, encoder.document(c.text)) for c in section.chunks]
            best = int(np.argmax(overlaps))
        if r.mode != "dense":
            scores["bm25"] = bm25.get(stored.id, 0.0)
        if r.mode == "hybrid":
            scores["fused"] = stored.score
        chunk = section.chunks[best] if section.chunks else _whole(section)
        return Hit(chunk=chunk, score=stored.score, scores=scores, section_id=section.id)

    def _rerank(self, reranker: Reranker, r: ResolvedQuery, hits: list[Hit]) -> list[Hit]:
        """The cross-encoder rescores the first ``rerank_depth`` hits (their best chunk); the final score blends
        it with the first stage's. Past ``rerank_depth`` hits keep their first-stage order and score."""
        head, rest = hits[: r.rerank_depth], hits[r.rerank_depth :]
        if not head:
            return hits
        rescored = reranker.score(r.query, [h.chunk.text for h in head])
        rerank = {i: float(s) for i, s in enumerate(rescored)}
        weight = reranker.recommended_weight if r.rerank_weight is None else r.rerank_weight
        final = fusion.blend(rerank, {i: h.score for i, h in enumerate(head)}, weight)
        for i, h in enumerate(head):
            h.scores["rerank"] = rerank[i]
            h.score = final[i]
        head = [head[i] for i in sorted(range(len(head)), key=lambda i: final[i], reverse=True)]
        return head + rest


def _whole(section: Section) -> Chunk:
    return Chunk(
        id=section.id,
        document_id=section.document_id,
        index=0,
        text=section.text,
        start=section.start,
        end=section.end,
        metadata=section.metadata,
    )


def _one_per_document(hits: list[Hit]) -> list[Hit]:
    """The best-ranked section of each document (hits arrive best first)."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.chunk.document_id not in seen:
            seen.add(h.chunk.document_id)
            out.append(h)
    return out
