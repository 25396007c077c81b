"""The retrieval service: collections, ingestion and search over a :class:`ChunkStore`.

One instance per process (the gateway builds it in its lifespan, the CLI per command); it owns the store and
loads each embedder once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragswap.model_store import ModelSettings
from retrieval import fusion
from retrieval.chunking import Chunker, TokenMeter
from retrieval.errors import InvalidDocumentError, InvalidSearchError
from retrieval.models import Embedder, Reranker, load_embedder, load_reranker
from retrieval.search import SearchQuery
from retrieval.settings import Bm25Settings, ChunkingSettings, EmbeddingPrecision, RetrievalSettings
from retrieval.store import ChunkStore, CollectionSpec, open_store
from retrieval.store.base import check_name
from retrieval.types import Chunk, Document, Hit, IngestReport

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
"""Called with (chunks encoded so far, chunks to encode)."""


@dataclass(frozen=True)
class CollectionInfo:
    spec: CollectionSpec
    documents: int
    chunks: int


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
        self.store = store or open_store(settings, state_dir)

    def close(self) -> None:
        self.store.close()

    # -- models ------------------------------------------------------------------------------------------
    def embedder(self, spec: CollectionSpec) -> Embedder:
        return load_embedder(spec.embedding_model, self.models, spec.embedding_precision)

    @property
    def reranker(self) -> Reranker | None:
        if not self.settings.reranker:
            return None
        return load_reranker(self.settings.reranker, self.models)

    def chunker(self, spec: CollectionSpec) -> Chunker:
        embedder = self.embedder(spec)
        return Chunker(
            spec.chunking,
            TokenMeter(embedder.tokenizer),
            embedder.max_tokens,
            embed=lambda texts: embedder.encode(texts, self.settings.batch_size),
        )

    # -- collections -------------------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        *,
        embedding_model: str | None = None,
        chunking: ChunkingSettings | None = None,
        bm25: Bm25Settings | None = None,
        embedding_precision: EmbeddingPrecision | None = None,
    ) -> CollectionSpec:
        check_name(name)
        model = embedding_model or self.settings.embedding_model or self.models.embedding_model
        precision = embedding_precision or self.settings.embedding_precision
        embedder = load_embedder(model, self.models, precision)
        spec = CollectionSpec(
            name=name,
            embedding_model=model,
            dimension=embedder.dimension,
            embedding_precision=precision,
            chunking=chunking or self.settings.chunking,
            bm25=bm25 or self.settings.bm25,
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
    def chunk_documents(self, spec: CollectionSpec, documents: Iterable[Document]) -> list[Chunk]:
        chunker = self.chunker(spec)
        chunks: list[Chunk] = []
        for doc in documents:
            if not doc.text.strip():
                raise InvalidDocumentError(f"document {doc.id!r} is empty", param="documents")
            chunks.extend(chunker.chunk(doc))
        return chunks

    def ingest(
        self,
        name: str,
        documents: Iterable[Document],
        progress: Progress | None = None,
        vectors: dict[str, np.ndarray] | None = None,
    ) -> IngestReport:
        """Add or replace documents (by id). Unchanged chunks are neither re-encoded nor rewritten.

        Everything is parsed, chunked and encoded before the store is touched, so a failure leaves the
        collection as it was.

        Args:
            vectors: precomputed unit vectors by chunk id (benchmarks reuse cached embeddings).
        """
        start = time.perf_counter()
        spec = self.store.spec(name)
        docs: dict[str, Document] = {}
        for doc in documents:
            docs[doc.id] = doc
        if not docs:
            raise InvalidDocumentError("no documents to ingest", param="documents")
        chunks = self.chunk_documents(spec, docs.values())
        existing = self.store.chunk_ids(name, list(docs))
        old = set().union(*existing.values()) if existing else set()
        new_ids = {c.id for c in chunks}
        fresh = [c for c in chunks if c.id not in old]
        remove = sorted(old - new_ids)
        encoded = self.encode_chunks(spec, fresh, progress, vectors)
        self.store.write(name, fresh, encoded, remove)
        report = IngestReport(
            documents=len(docs),
            chunks_added=len(fresh),
            chunks_unchanged=len(chunks) - len(fresh),
            chunks_removed=len(remove),
            seconds=time.perf_counter() - start,
        )
        logger.info("ingested", extra={"collection": name, **report.__dict__})
        return report

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
        existing = self.store.chunk_ids(name, document_ids)
        remove = sorted(set().union(*existing.values())) if existing else []
        if remove:
            spec = self.store.spec(name)
            self.store.write(name, [], np.zeros((0, spec.dimension), dtype=np.float32), remove)
        return len(remove)

    # -- search ------------------------------------------------------------------------------------------
    def search(self, q: SearchQuery) -> list[Hit]:
        """Dense, BM25 or fused candidates, optionally reranked; each hit carries every stage's score."""
        if not q.query.strip():
            raise InvalidSearchError("query must not be empty", param="query")
        spec = self.store.spec(q.collection)
        reranker = self.reranker
        if q.rerank and reranker is None:
            raise InvalidSearchError(
                "reranking needs a trained cross-encoder: set retrieval.reranker", param="rerank"
            )
        do_rerank = bool(q.rerank if q.rerank is not None else reranker is not None) and reranker is not None
        vector = None
        if q.mode != "bm25":
            vector = q.vector if q.vector is not None else self.embedder(spec).encode([q.query])[0]
        dense = self.store.dense(q.collection, vector, q.candidates, q.filter) if vector is not None else {}
        sparse = self.store.bm25(q.collection, q.query, q.candidates, q.filter) if q.mode != "dense" else {}
        if q.mode == "dense":
            fused = dense
        elif q.mode == "bm25":
            fused = sparse
        elif q.fusion == "weighted":
            fused = fusion.weighted(dense, sparse, q.weight)
        elif q.fusion == "dbsf":
            fused = fusion.dbsf([dense, sparse])
        else:
            fused = fusion.rrf([dense, sparse], q.rrf_k)
        ranked = sorted(fused, key=lambda cid: fused[cid], reverse=True)
        rerank_scores: dict[str, float] = {}
        final_scores: dict[str, float] = {}
        if do_rerank and reranker is not None:
            head, rest = ranked[: q.rerank_depth], ranked[q.rerank_depth :]
            texts = self.store.get(q.collection, head)
            head = [cid for cid in head if cid in texts]
            rescored = reranker.score(q.query, [texts[cid].text for cid in head])
            rerank_scores = {cid: float(s) for cid, s in zip(head, rescored, strict=True)}
            weight = reranker.recommended_weight if q.rerank_weight is None else q.rerank_weight
            final_scores = fusion.blend(rerank_scores, {cid: fused[cid] for cid in head}, weight)
            head.sort(key=lambda cid: final_scores[cid], reverse=True)
            ranked = head + rest  # past rerank_depth, hits keep their first-stage order and score
        top = ranked[: q.top_k]
        chunks = self.store.get(q.collection, top)
        if vector is not None:
            missing = [cid for cid in top if cid not in dense]
            dense = {**dense, **self.store.dense_scores(q.collection, vector, missing)}
        hits = []
        for cid in top:
            if cid not in chunks:
                continue
            scores: dict[str, float] = {}
            if cid in dense:
                scores["dense"] = dense[cid]
            if q.mode != "dense":
                scores["bm25"] = sparse.get(cid, 0.0)
            if q.mode == "hybrid":
                scores["fused"] = fused[cid]
            if cid in rerank_scores:
                scores["rerank"] = rerank_scores[cid]
            final = final_scores.get(cid, fused[cid])
            hits.append(Hit(chunk=chunks[cid], score=final, scores=scores))
        return hits
