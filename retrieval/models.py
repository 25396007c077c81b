"""The neural models retrieval uses, loaded once per process: a sentence-transformers embedder and an optional
CrossEncoder reranker. Both resolve catalog names through the offline model store (no hub downloads)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragswap.model_store import ModelSettings, resolve_model

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

logger = logging.getLogger(__name__)
RETRIEVER_MANIFEST = "ragswap-retriever.json"
"""Written next to the weights by ``training.train_reranker`` / ``train_embedder``."""
_lock = threading.Lock()
_embedders: dict[str, Embedder] = {}
_rerankers: dict[str, Reranker] = {}


class Embedder:
    """L2-normalised sentence embeddings (cosine = dot product) and the tokenizer that sizes chunks."""

    def __init__(self, model: SentenceTransformer, name: str) -> None:
        self.model = model
        self.name = name
        self.dimension = int(model.get_embedding_dimension() or 0)
        self.max_tokens = int(model.max_seq_length or 256)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class Reranker:
    """A cross-encoder that scores (query, passage) pairs jointly: the second, precise stage."""

    def __init__(self, model: CrossEncoder, name: str, recommended_weight: float = 1.0) -> None:
        self.model = model
        self.name = name
        self.recommended_weight = recommended_weight
        """Blend weight with the first stage its training found best (1 = the cross-encoder's order alone)."""

    def score(self, query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(
            [(query, p) for p in passages], batch_size=batch_size, show_progress_bar=False
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages))


def load_embedder(name: str, models: ModelSettings) -> Embedder:
    """The embedder for a catalog name or directory, shared by every collection that uses it."""
    path = resolve_model(name, models)
    with _lock:
        if path not in _embedders:
            from sentence_transformers import SentenceTransformer

            logger.info("loading embedder", extra={"model": path})
            _embedders[path] = Embedder(SentenceTransformer(path, device="cpu"), name)
        return _embedders[path]


def load_reranker(name: str, models: ModelSettings) -> Reranker:
    """A trained CrossEncoder directory (``training.train_reranker`` writes one)."""
    path = resolve_model(name, models)
    with _lock:
        if path not in _rerankers:
            from sentence_transformers import CrossEncoder

            weight = recommended_rerank_weight(Path(path))
            logger.info("loading reranker", extra={"model": path, "recommended_weight": weight})
            _rerankers[path] = Reranker(CrossEncoder(path, device="cpu"), name, weight)
        return _rerankers[path]


def recommended_rerank_weight(folder: Path) -> float:
    """``metrics.recommended_rerank_weight`` of a ragswap-trained reranker's manifest; 1 for any other
    CrossEncoder (or an unreadable manifest: a bad file must not stop search)."""
    manifest = folder / RETRIEVER_MANIFEST
    try:
        weight = json.loads(manifest.read_text())["metrics"]["recommended_rerank_weight"]
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return float(weight) if isinstance(weight, int | float) and 0 <= weight <= 1 else 1.0
