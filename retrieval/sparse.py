"""BM25 as sparse vectors: the one BM25 of ragswap, for both backends, training and tuning.

Qdrant Edge's ``Bm25`` embedder turns a document into its BM25 term weights ``tf·(k1+1) / (tf + k1·(1 - b +
b·len/avg_len))`` (Snowball stemmer and stopwords of the language) and a query into its distinct terms; the engine
stores them as a sparse vector with ``Modifier.Idf`` and multiplies each term's IDF ``ln(1 + (N - n + 0.5) /
(n + 0.5))`` at query time. The token ids and the formula are Qdrant server's own, so the embedded store and a
Qdrant server score identically. Collection statistics (``N``, ``n``) stay in the engine; only ``avg_len`` is
fixed when a document is embedded (see :attr:`retrieval.settings.Bm25Settings.avg_len`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrieval.settings import Bm25Settings

if TYPE_CHECKING:
    from qdrant_edge import Bm25

DEFAULT_AVG_LEN = 256.0
"""Qdrant's default ``avg_len``; used until a collection has measured its own."""
_COUNT_K = 1.2
_lock = threading.Lock()
_models: dict[tuple[float, float, float, str], Bm25] = {}


@dataclass(frozen=True)
class SparseVector:
    """Sorted term ids and their weights (the engines' sparse vector, independent of either client)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


def _model(k1: float, b: float, avg_len: float, language: str) -> Bm25:
    key = (k1, b, avg_len, language)
    with _lock:
        model = _models.get(key)
        if model is None:
            from qdrant_edge import Bm25, Bm25Config

            model = _models[key] = Bm25(Bm25Config(k=k1, b=b, avg_len=avg_len, language=language))
        return model


def _convert(vector: object) -> SparseVector:
    pairs = sorted(zip(vector.indices, vector.values, strict=True))  # type: ignore[attr-defined]
    return SparseVector(tuple(int(i) for i, _ in pairs), tuple(float(v) for _, v in pairs))


class Bm25Encoder:
    """Document and query sparse vectors for one collection's BM25 settings."""

    def __init__(self, settings: Bm25Settings) -> None:
        self.settings = settings
        self.avg_len = settings.avg_len or DEFAULT_AVG_LEN
        self._model = _model(settings.k1, settings.b, self.avg_len, settings.language)

    def document(self, text: str) -> SparseVector:
        """BM25 term weights of one document (or section); the engine supplies the IDF."""
        return _convert(self._model.embed_document(text))

    def query(self, text: str) -> SparseVector:
        """Each distinct query term once, weight 1 (the engine's IDF makes the BM25 sum)."""
        return _convert(self._model.embed_query(text))


def term_count(text: str, language: str = "english") -> float:
    """Terms BM25 counts in ``text`` (after stopwords): what ``avg_len`` averages.

    With ``b = 0`` a term's weight is ``tf·(k+1)/(tf+k)``, which gives back ``tf``; their sum is the length.
    """
    vector = _model(_COUNT_K, 0.0, DEFAULT_AVG_LEN, language).embed_document(text)
    return float(sum(w * _COUNT_K / (_COUNT_K + 1 - w) for w in vector.values))


def overlap_score(query: SparseVector, document: SparseVector) -> float:
    """The query terms' document-side BM25 weights summed, without IDF: picks the best chunk of a section
    when there is no query embedding (BM25 mode)."""
    weights = dict(zip(document.indices, document.values, strict=True))
    return sum(weights.get(i, 0.0) for i in query.indices)


class Bm25Index:
    """BM25 over a list of texts in a temporary Qdrant Edge shard: the engine's BM25, exactly as a collection
    scores (its IDF over these texts), without a collection. Mining negatives, BM25 grids and benchmarks use it.

    Example:
        >>> with Bm25Index(["the cat sat", "a dog ran"], Bm25Settings()) as index:
        ...     index.search(["cat"], k=1)
        [[(0, 0.69...)]]
    """

    def __init__(self, texts: list[str], settings: Bm25Settings) -> None:
        import shutil
        import tempfile

        from qdrant_edge import (
            EdgeConfig,
            EdgeShard,
            EdgeSparseVectorParams,
            Modifier,
            Point,
            UpdateOperation,
        )

        if settings.avg_len is None and texts:
            sample = texts[:5000]
            settings = settings.model_copy(
                update={
                    "avg_len": max(1.0, sum(term_count(t, settings.language) for t in sample) / len(sample))
                }
            )
        self.settings = settings
        self.encoder = Bm25Encoder(settings)
        self.size = len(texts)
        self._dir = tempfile.mkdtemp(prefix="ragswap-bm25-")
        self._cleanup = shutil.rmtree
        self._shard = EdgeShard.create(
            self._dir, EdgeConfig(sparse_vectors={"bm25": EdgeSparseVectorParams(modifier=Modifier.Idf)})
        )
        for start in range(0, len(texts), 1024):
            points = [
                Point(i, {"bm25": _edge_sparse(self.encoder.document(text))})
                for i, text in enumerate(texts[start : start + 1024], start=start)
            ]
            self._shard.update(UpdateOperation.upsert_points(points))

    def search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """The ``k`` best (row, BM25 score) of each query, best first (empty for a query of stopwords)."""
        from qdrant_edge import Query, QueryBatchRequest, QueryRequest

        vectors = [self.encoder.query(q) for q in queries]
        asked = [i for i, v in enumerate(vectors) if v]
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        for start in range(0, len(asked), 256):
            rows = asked[start : start + 256]
            requests = [
                QueryRequest(limit=k, query=Query.Nearest(_edge_sparse(vectors[i]), using="bm25"))
                for i in rows
            ]
            for i, found in zip(rows, self._shard.query_batch(QueryBatchRequest(requests)), strict=True):
                out[i] = [(int(p.id), float(p.score)) for p in found]
        return out

    def close(self) -> None:
        self._shard.close()
        self._cleanup(self._dir, ignore_errors=True)

    def __enter__(self) -> Bm25Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _edge_sparse(vector: SparseVector) -> Any:
    from qdrant_edge import SparseVector as EdgeSparse

    return EdgeSparse(list(vector.indices), list(vector.values))
