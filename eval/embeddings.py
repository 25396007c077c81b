"""The local sentence-transformers model (all-MiniLM-L6-v2 by default) as a ragas embedding and for similarity."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ragas.embeddings.base import BaseRagasEmbedding

if TYPE_CHECKING:
    from ragswap import ModelSettings


def default_embedding_path(models: ModelSettings) -> Path:
    """The configured embedding model (``models.embedding_model``) from the offline model store (never
    downloaded)."""
    from ragswap import resolve_model

    return Path(resolve_model(models.embedding_model, models))


class LocalEmbeddings(BaseRagasEmbedding):
    """Wraps a local ``SentenceTransformer`` directory; loaded once, encoded off the event loop.

    Example:
        >>> emb = LocalEmbeddings(default_embedding_path(settings.models))
        >>> len(emb.embed_text("hello"))
        384
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__(cache=None)
        self.path = str(path)
        self._model: Any = None
        self._lock = threading.Lock()

    def _encoder(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                from ragswap import model_loading

                with model_loading():
                    self._model = SentenceTransformer(self.path, device="cpu")
            return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised vectors, one row per text."""
        model = self._encoder()
        with self._lock:
            vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
        return np.asarray(vectors, dtype=np.float32)

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        return [float(x) for x in self.encode([text])[0]]

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(self.embed_text, text)

    def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.encode(list(texts))]

    async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_texts, list(texts))

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        vectors = self.encode([a, b])
        return float(np.dot(vectors[0], vectors[1]))
